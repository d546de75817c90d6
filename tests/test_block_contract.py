"""The contract every registered block keeps, parametrised over ``list_blocks()``.

Shapes in 1D/2D/3D, float64 gradients, a finite bf16 forward, ``init="identity"`` an exact
identity in eval and train mode, a re-runnable ``reset_parameters``, ``zero_init_last()`` hooks
that keep the identity, error messages naming the block, and torch.fx symbolic tracing.
"""

import pytest
import torch
import torch.fx

import globalctx
from globalctx.layers import list_blocks

BLOCKS = list_blocks()
C = 16
#: blocks defined for 2D maps only (FcaNet's frequency tables are 2D)
TWO_D_ONLY = {"fca"}
#: options that keep the fp64 gradient check small
SMALL = {"gsop": {"cov_channels": 4}, "enc": {"num_codes": 4}}
SHAPES = {1: (2, C, 7), 2: (2, C, 5, 6), 3: (2, C, 2, 4, 5)}
#: blocks whose forward branches on input shapes/dtypes at the Python level (NL/DNL: SDPA layout and
#: BN folding; SRM: the batch-of-one BatchNorm fallback); they trace as leaf modules only
NOT_FX_TRACEABLE = {"nl", "dnl", "srm"}


def dims_of(name):
    return [2] if name in TWO_D_ONLY else [1, 2, 3]


def build(name, **options):
    return globalctx.create_block(name, C, **{**SMALL.get(name, {}), **options})


def perturb(block, std=0.3):
    """Move every parameter away from its (often zero) init so all paths carry signal."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("encoding.scale"):  # EncNet smoothing factors stay negative
                p.uniform_(-1.0, -0.1, generator=g)
            else:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return block


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_shape_preserved(name, dims):
    if dims not in dims_of(name):
        with pytest.raises(ValueError, match=name):
            build(name)(torch.randn(SHAPES[dims]))
        return
    blk = build(name)
    x = torch.randn(SHAPES[dims])
    for mode in (blk.train, blk.eval):
        mode()
        assert blk(x).shape == x.shape


@pytest.mark.parametrize("name", BLOCKS)
def test_gradcheck_float64(name):
    dims = dims_of(name)[0]
    blk = perturb(build(name).double()).train()
    x = torch.randn((2, C, 3, 3)[: 2 + dims], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("name", BLOCKS)
def test_bf16_forward_finite(name):
    blk = build(name).to(torch.bfloat16)
    x = torch.randn(SHAPES[2], dtype=torch.bfloat16)
    for mode in (blk.train, blk.eval):
        mode()
        y = blk(x)
        assert y.dtype == torch.bfloat16 and y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_init_identity_is_exact(name, train):
    blk = build(name, init="identity").train(train)
    for dims in dims_of(name):
        x = torch.randn(SHAPES[dims])
        with torch.no_grad():
            assert torch.equal(blk(x), x)


@pytest.mark.parametrize("name", BLOCKS)
def test_init_rejects_unknown_value(name):
    with pytest.raises(ValueError, match=r"init must be one of \('paper', 'identity'\)"):
        build(name, init="zeros")


@pytest.mark.parametrize("name", BLOCKS)
def test_reset_parameters_rerunnable(name):
    blk = build(name)
    assert callable(getattr(blk, "reset_parameters", None))
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        blk.reset_parameters()
        states.append({k: v.clone() for k, v in blk.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    ident = build(name, init="identity")
    perturb(ident).reset_parameters()
    x = torch.randn(SHAPES[dims_of(name)[0]])
    with torch.no_grad():
        assert torch.equal(ident(x), x)


@pytest.mark.parametrize("name", BLOCKS)
def test_zero_init_last_hooks_keep_identity(name):
    """A backbone initialiser (timm's ``init_weights``) calls ``zero_init_last()`` on every
    module that has the attribute: it must be a method, and calling it keeps the identity."""
    blk = build(name, init="identity")
    for m in blk.modules():
        if hasattr(m, "zero_init_last"):
            assert callable(m.zero_init_last), type(m).__name__
            m.zero_init_last()
    x = torch.randn(SHAPES[dims_of(name)[0]])
    with torch.no_grad():
        assert torch.equal(blk(x), x)


@pytest.mark.parametrize("name", BLOCKS)
def test_wrong_channels_error_names_block(name):
    blk = build(name)
    x = torch.randn((2, C // 2) + SHAPES[2][2:])
    with pytest.raises(ValueError, match=rf"^{name}: expected {C} channels"):
        blk(x)


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("channels", [0, -3, 2.5, "16", True])
def test_create_block_validates_channels(name, channels):
    err = ValueError if isinstance(channels, int) and not isinstance(channels, bool) else TypeError
    with pytest.raises(err, match=rf"^{name}: channels must be"):
        globalctx.create_block(name, channels)


FX_CASES = [
    pytest.param(
        n,
        marks=pytest.mark.xfail(
            strict=True, raises=torch.fx.proxy.TraceError, reason="Python-level branches on input shape/dtype"
        ),
    )
    if n in NOT_FX_TRACEABLE
    else n
    for n in BLOCKS
]


@pytest.mark.parametrize("name", FX_CASES)
def test_fx_symbolic_trace_same_output(name):
    blk = perturb(build(name)).eval()
    gm = torch.fx.symbolic_trace(blk)
    x = torch.randn(SHAPES[dims_of(name)[0]])
    with torch.no_grad():
        assert torch.equal(gm(x), blk(x))


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("scale", [1e3, 1e4])
@pytest.mark.parametrize("name", BLOCKS)
def test_autocast_large_activations_finite(name, scale, amp_dtype):
    # fp32 weights and input under CPU autocast: distances, covariances, bilinear products and
    # logits of activations this large overflow fp16 (and lose bf16's range) unless computed in fp32
    blk = perturb(build(name))
    x = torch.randn(SHAPES[2], generator=torch.Generator().manual_seed(0)) * scale
    ref = perturb(build(name).double())
    for train in (False, True):
        blk.train(train), ref.train(train)
        with torch.no_grad():
            expected = ref(x.double())
            with torch.autocast("cpu", dtype=amp_dtype):
                y = blk(x)
        assert y.shape == x.shape
        finite = torch.isfinite(expected)
        assert finite.all(), f"{name}: the float64 result itself is not finite"
        bad = (~torch.isfinite(y) & finite).sum().item()
        assert bad == 0, f"{name} ({'train' if train else 'eval'}): {bad} non-finite outputs under {amp_dtype} autocast"


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_empty_batch_gives_empty_output(name, train):
    blk = build(name).train(train)
    x = torch.randn(0, C, 8, 8)
    with torch.no_grad():
        y = blk(x)
    assert y.shape == x.shape


@pytest.mark.parametrize("name", BLOCKS)
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_channels_last_kept(name, train):
    blk = perturb(build(name)).train(train)
    x = torch.randn(2, C, 6, 8)
    cases = [(x, torch.channels_last)]
    if 3 in dims_of(name):
        cases.append((torch.randn(2, C, 3, 4, 6), torch.channels_last_3d))
    for xc, fmt in cases:
        xl = xc.contiguous(memory_format=fmt)
        with torch.no_grad():
            y, expected = blk(xl), blk(xc)
        kept = y.is_contiguous(memory_format=fmt) and not y.is_contiguous()
        assert kept, f"{name}: {fmt} input, output strides {y.stride()}"
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("amp_dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", ["gc", "snl", "dnl"])
def test_autocast_attention_pooling_logits_in_fp32(name, amp_dtype):
    # the pooling logits w . x_j are a dot product over C: activations of 1e4 and ||w|| = 3 give
    # logits past fp16's range (inf - inf = NaN in the softmax) unless computed in fp32
    blk = globalctx.create_block(name, 64, init="paper", zero_init_last=False).eval()
    mask = blk.unary.conv_mask if name == "dnl" else blk.context.conv_mask
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        mask.weight.copy_(torch.randn(mask.weight.shape, generator=g) * 3 / 64**0.5)
    x = torch.randn(2, 64, 14, 14, generator=g) * 1e4
    with torch.no_grad():
        expected = blk.double()(x.double())
        blk.float()
        with torch.autocast("cpu", dtype=amp_dtype):
            y = blk(x)
    assert torch.isfinite(expected).all() and torch.isfinite(y).all()
