"""Non-local block: every backend against the reference path and a dense formula, identity at init,
gradcheck, mixed precision, compile, fused-kernel dispatch, attention rows, SNL link, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import globalctx
from globalctx.layers.blocks.nl import PAIRWISE, NonLocal, subsample_pool

SHAPES = {1: (2, 8, 12), 2: (2, 8, 6, 5), 3: (2, 8, 3, 4, 4)}
BACKENDS = {
    "gaussian": ["sdpa", "chunked"],
    "embedded_gaussian": ["sdpa", "chunked"],
    "dot_product": ["linear", "chunked"],
    "concatenation": ["linear", "chunked"],
}
CASES = [(pw, b) for pw in PAIRWISE for b in BACKENDS[pw]]


def randomize(module: nn.Module, seed: int = 0, std: float = 0.3) -> nn.Module:
    """Non-trivial values everywhere (zero-init would hide the block's math)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype) * std)
            if name.startswith("norm."):
                p.add_(1.0 if name.endswith("weight") else 0.0)
    return module


def make(pw, backend="auto", dtype=torch.float32, **kw):
    m = NonLocal(8, pairwise=pw, backend=backend, chunk_size=5 if backend == "chunked" else None, **kw)
    return randomize(m).to(dtype).eval()


def dense_nl(m: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """The paper's formula written out with the full [N, L, L_k] matrix (independent of the module)."""
    n, c = x.shape[:2]

    def emb(layer, t):  # 1x1 conv as einsum on [N, C, *S]
        out = torch.einsum("oc,nc...->no...", layer.weight, t)
        return out + layer.bias.view(1, -1, *([1] * (t.dim() - 2)))

    def kv(layer):
        if not m.subsample:
            return emb(layer, x)
        if m.subsample_order == "pool_first":
            return emb(layer, subsample_pool(x))
        return subsample_pool(emb(layer, x))

    g = kv(m.g).flatten(2)  # [N, C_r, L_k]
    if m.pairwise == "gaussian":
        th, ph = x.flatten(2), (subsample_pool(x) if m.subsample else x).flatten(2)
    else:
        th, ph = emb(m.theta, x).flatten(2), kv(m.phi).flatten(2)
    lk = ph.shape[-1]
    if m.pairwise == "concatenation":
        w = m.concat_project.weight[0]
        a = torch.einsum("c,ncl->nl", w[: m.rd_channels], th)
        b = torch.einsum("c,ncl->nl", w[m.rd_channels :], ph)
        f = torch.relu(a[:, :, None] + b[:, None, :]) / lk
    else:
        logits = torch.einsum("ncl,nck->nlk", th, ph)
        if m.pairwise == "dot_product":
            f = logits / lk
        else:
            d = th.shape[1]
            f = (logits / math.sqrt(d) if m.use_scale else logits).softmax(-1)
    y = torch.einsum("nlk,nck->ncl", f, g)  # [N, C_r, L]
    z = torch.einsum("oc,ncl->nol", m.out.weight, y) + m.out.bias.view(1, -1, 1)
    bn = m.norm
    z = F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return x + z.reshape(x.shape)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("pw,backend", CASES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_backends_match_reference(pw, backend, dims, subsample, dtype, tol):
    x = torch.randn(SHAPES[dims], dtype=dtype)
    m = make(pw, backend, dtype, subsample=subsample)
    ref = make(pw, "reference", dtype, subsample=subsample)
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        y, yr = m(x), ref(x)
    assert (y - x).abs().max() > 1e-3  # the block contributes: the comparison is not vacuous
    torch.testing.assert_close(y, yr, rtol=tol, atol=tol)


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("order", ["pool_first", "embed_first"])
@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("pw", PAIRWISE)
def test_reference_matches_dense_formula(pw, subsample, order, dims):
    x = torch.randn(SHAPES[dims], dtype=torch.float64)
    m = make(pw, "reference", torch.float64, subsample=subsample, subsample_order=order)
    with torch.no_grad():
        torch.testing.assert_close(m(x), dense_nl(m, x), rtol=1e-10, atol=1e-10)


def test_auto_backend_choice():
    assert NonLocal(8).backend == "sdpa"
    assert NonLocal(8, pairwise="gaussian").backend == "sdpa"
    assert NonLocal(8, pairwise="dot_product").backend == "linear"
    assert NonLocal(8, pairwise="concatenation").backend == "linear"


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("pw", PAIRWISE)
def test_identity_at_init(pw, norm, dims):
    m = NonLocal(8, pairwise=pw, norm=norm)
    x = torch.randn(SHAPES[dims]) * 3
    for mode in (m.train, m.eval):
        mode()
        with torch.no_grad():
            assert torch.equal(m(x), x)
    last = m.norm if norm else m.out
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    # the gradient still reaches the zeroed layer, so training moves the block off the identity
    m.train()
    m(x).square().sum().backward()
    assert last.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("pw,backend", CASES + [(pw, "reference") for pw in PAIRWISE])
def test_gradcheck(pw, backend):
    m = make(pw, backend, torch.float64, norm=False)
    m.chunk_size = 4 if backend == "chunked" else None
    x = torch.randn(1, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6, fast_mode=True)


def test_gradients_reach_all_parameters():
    for pw in PAIRWISE:
        m = make(pw).train()
        m(torch.randn(SHAPES[2])).sum().backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (pw, name)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pw,backend", CASES + [(pw, "reference") for pw in PAIRWISE])
def test_autocast_large_activations_finite(pw, backend, amp_dtype):
    m = NonLocal(16, pairwise=pw, backend=backend, zero_init_last=False, chunk_size=7).eval()
    x = torch.randn(2, 16, 6, 6) * 1e3  # gaussian logits ~1e7: overflow fp16 if computed in fp16
    with torch.no_grad(), torch.autocast("cpu", dtype=amp_dtype):
        y = m(x)
    assert torch.isfinite(y).all()
    with torch.no_grad():
        y32 = m(x)
    assert (y32 - x).abs().max() > 1.0
    if pw == "dot_product":  # no softmax saturation: the fp32 reduction keeps it close to fp32
        torch.testing.assert_close(y.float(), y32, rtol=2e-2, atol=2e-2 * y32.abs().max().item())


def test_fused_sdpa_kernel_is_used():
    from torch.profiler import profile

    x = torch.randn(1, 16, 8, 8)
    for pw in ("embedded_gaussian", "gaussian"):
        for sub in (False, True):
            m = NonLocal(16, pairwise=pw, subsample=sub).eval()
            with torch.no_grad(), profile() as prof:
                m(x)
            names = {e.name for e in prof.events()}
            assert "aten::_scaled_dot_product_flash_attention_for_cpu" in names, (pw, sub, names)
            assert "aten::_scaled_dot_product_attention_math" not in names, (pw, sub)


def test_torch_compile_matches_eager():
    for pw in ("embedded_gaussian", "concatenation"):
        m = make(pw)
        x = torch.randn(SHAPES[2])
        compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), m(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_inductor():
    m = make("embedded_gaussian")
    x = torch.randn(SHAPES[2])
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(m)(x), m(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("subsample", [False, True])
@pytest.mark.parametrize("pw", PAIRWISE)
def test_attention_rows_match_dense_matrix(pw, subsample):
    m = make(pw, dtype=torch.float64, subsample=subsample)
    x = torch.randn(2, 8, 6, 4, dtype=torch.float64)
    queries = torch.tensor([0, 7, 23])
    rows = m.attention_rows(x, queries)
    assert rows.shape == (2, 3, math.prod(m.key_shape(x)))
    assert m.key_shape(x) == ((3, 2) if subsample else (6, 4))
    # dense weights from the formula: recover f by feeding one-hot values through dense_nl's matrix
    ref = make(pw, "reference", torch.float64, subsample=subsample)
    ref.load_state_dict(m.state_dict())
    q, k, _ = ref._qkv(x)
    lk = k.shape[1]
    if pw == "concatenation":
        full = torch.relu(q[:, :, None] + k[:, None, :]) / lk
    else:
        logits = q @ k.transpose(1, 2)
        full = logits / lk if pw == "dot_product" else (logits * m.scale).softmax(-1)
    torch.testing.assert_close(rows, full[:, queries])
    if pw in ("gaussian", "embedded_gaussian"):
        torch.testing.assert_close(rows.sum(-1), torch.ones(2, 3, dtype=torch.float64))


def test_attention_rows_3d_and_fp32():
    m = make("embedded_gaussian", subsample=True)
    x = torch.randn(1, 8, 2, 4, 6)
    rows = m.attention_rows(x, [0, 5])
    assert rows.dtype == torch.float32 and rows.shape == (1, 2, 2 * 2 * 3)
    assert m.key_shape(x) == (2, 2, 3)


def test_snl_link_constant_query_embedding():
    """NL with a constant query embedding is query-independent and equals the `snl` preset (GCNet §3.1)."""
    c = 8
    nl = randomize(NonLocal(c, norm=False)).double()
    with torch.no_grad():
        nl.theta.weight.zero_()  # theta(x_i) = b_theta for every i
    x = torch.randn(2, c, 5, 6, dtype=torch.float64)
    rows = nl.attention_rows(x, torch.arange(30))
    torch.testing.assert_close(rows, rows[:, :1].expand_as(rows))  # same map for every query
    snl = globalctx.create_block("snl", c, bias=True).double()  # W_z b_g + b_z needs the bias
    with torch.no_grad():
        # logits_j = scale * b_theta . (W_phi x_j + b_phi): the b_phi term is constant in j
        snl.context.conv_mask.weight.copy_(nl.scale * nl.theta.bias @ nl.phi.weight)
        snl.context.conv_mask.bias.fill_(0.7)  # softmax-invariant
        # W_z (W_g c + b_g) + b_z with c the pooled context (weights sum to 1)
        snl.transform.fc.weight.copy_(nl.out.weight @ nl.g.weight)
        snl.transform.fc.bias.copy_(nl.out.weight @ nl.g.bias + nl.out.bias)
        torch.testing.assert_close(nl(x), snl(x), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(rows[:, 0], snl.context.attention(x), rtol=1e-10, atol=1e-10)
    # and a non-constant query embedding is not query-independent
    randomize(nl, seed=1)
    rows = nl.attention_rows(x, torch.arange(30))
    assert (rows - rows[:, :1]).abs().max() > 1e-3


@pytest.mark.parametrize("c,count", [(256, 132_224), (512, 526_592), (1024, 2_101_760)], ids=["C256", "C512", "C1024"])
def test_parameter_counts(c, count):
    m = globalctx.create_block("nl", c)
    assert sum(p.numel() for p in m.parameters()) == count


def test_registry_and_shapes():
    assert "nl" in globalctx.list_blocks()
    nl = globalctx.create_block("nl", 16, pairwise="dot_product", subsample=True)
    assert isinstance(nl, NonLocal) and nl.rd_channels == 8
    for shape in [(2, 16, 10), (2, 16, 6, 8), (1, 16, 2, 4, 6)]:
        assert nl(torch.randn(shape)).shape == shape
    assert globalctx.create_block("nl", 64, rd_ratio=0.25).rd_channels == 16
    assert globalctx.create_block("nl", 64, rd_channels=5).rd_channels == 5


def test_use_scale_divides_by_sqrt_d():
    """The official scale divides logits by sqrt(C_r); the `/= d**-0.5` bug would multiply."""
    m = make("embedded_gaussian", dtype=torch.float64)
    assert m.scale == pytest.approx(1 / math.sqrt(4))
    x = torch.randn(1, 8, 4, 4, dtype=torch.float64)
    q, k, _ = m._qkv(x)
    expected = (q @ k.transpose(1, 2) / math.sqrt(4)).softmax(-1)[:, :3]
    torch.testing.assert_close(m.attention_rows(x, [0, 1, 2]), expected)
    assert NonLocal(8, pairwise="gaussian").scale == 1.0
    assert NonLocal(8, pairwise="gaussian", use_scale=True).scale == pytest.approx(1 / math.sqrt(8))


def test_errors():
    with pytest.raises(ValueError, match="pairwise"):
        NonLocal(8, pairwise="embedded")
    with pytest.raises(ValueError, match="cannot compute"):
        NonLocal(8, pairwise="dot_product", backend="sdpa")
    with pytest.raises(ValueError, match="cannot compute"):
        NonLocal(8, pairwise="embedded_gaussian", backend="linear")
    with pytest.raises(ValueError, match="valid backends"):
        NonLocal(8, backend="flash")
    with pytest.raises(ValueError, match="use_scale"):
        NonLocal(8, pairwise="dot_product", use_scale=True)
    with pytest.raises(ValueError, match="subsample_order"):
        NonLocal(8, subsample_order="after")
    with pytest.raises(ValueError, match="< 1"):
        NonLocal(8, rd_ratio=0.01)
    with pytest.raises(TypeError):
        globalctx.create_block("nl", 8, pairwse="dot_product")
    m = NonLocal(8, subsample=True)
    with pytest.raises(ValueError, match="8 channels"):
        m(torch.randn(1, 4, 6, 6))
    with pytest.raises(ValueError, match="spatial dims"):
        m(torch.randn(1, 8, 1, 6))
    with pytest.raises(ValueError, match="floating"):
        m(torch.ones(1, 8, 4, 4, dtype=torch.long))


def test_train_mode_batchnorm_updates_running_stats():
    m = make("embedded_gaussian").train()
    before = m.norm.running_mean.clone()
    m(torch.randn(SHAPES[3]))
    assert not torch.equal(before, m.norm.running_mean)


@pytest.mark.parametrize("amp_dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["linear", "chunked", "reference"])
def test_autocast_concatenation_projection_in_fp32(backend, amp_dtype):
    # a_i = w_theta . theta_i with the official Kaiming init of w (std sqrt(2)) at C=256 and
    # activations of 1e4: ~1e5, past fp16's range unless projected in fp32
    torch.manual_seed(0)
    m = NonLocal(256, pairwise="concatenation", backend=backend, zero_init_last=False).eval()
    x = torch.randn(2, 256, 6, 6) * 1e4
    with torch.no_grad(), torch.autocast("cpu", dtype=amp_dtype):
        y = m(x)
    with torch.no_grad():
        expected = m.double()(x.double())
    assert torch.isfinite(expected).all() and torch.isfinite(y).all()


def _grad_of_grad(block, x):
    (g,) = torch.autograd.grad(block(x).square().sum(), x, create_graph=True)
    g.square().sum().backward()
    return x.grad


@pytest.mark.parametrize("pw", ["embedded_gaussian", "gaussian"])
def test_double_backward_default_backend_names_the_fix(pw):
    m = NonLocal(8, pairwise=pw, zero_init_last=False).double()
    assert m.backend == "sdpa"
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"create_graph=True.*backend='chunked'") as err:
        _grad_of_grad(m, x)
    assert "\n" not in str(err.value)
    # first-order gradients on the default backend are unaffected
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", ["chunked", "reference"])
@pytest.mark.parametrize("pw", ["embedded_gaussian", "gaussian"])
def test_double_backward_chunked_and_reference(pw, backend):
    m = NonLocal(8, pairwise=pw, zero_init_last=False, backend=backend).double()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(m, (x,), fast_mode=True)
