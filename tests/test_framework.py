"""The GCNet framework parts and the se / snl / gc presets against plain references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import globalctx
from framework_reference import SHAPES, randomize
from globalctx.layers import AddFusion, AttnPool, AvgPool, Bottleneck, GlobalContextBlock, ScaleFusion


def test_gc_avg_no_norm_scale_equals_se():
    """GCNet §3.3: SE is the framework with avg pooling, a bottleneck without norm and scale fusion."""
    se = randomize(globalctx.create_block("se", 64, rd_ratio=1 / 16))
    gc = globalctx.create_block("gc", 64, rd_ratio=1 / 16, pooling="avg", norm=False, fusion="mul")
    gc.load_state_dict(se.state_dict())
    x = torch.randn(3, 64, 7, 7)
    torch.testing.assert_close(gc(x), se(x), rtol=0, atol=0)


def test_free_composition():
    blk = GlobalContextBlock(
        32, context=AvgPool(), transform=Bottleneck(32, 8, norm_layer=nn.LayerNorm), fusion=AddFusion()
    )
    x = torch.randn(2, 32, 6, 6)
    assert torch.equal(blk(x), x)  # zero-init last layer -> identity
    randomize(blk)
    ref = x + blk.transform(x.mean((2, 3)))[..., None, None]
    torch.testing.assert_close(blk(x), ref)


def test_sequential_transform_resets_and_names_errors():
    """A part without ``reset_parameters`` (an ``nn.Sequential``) is reset through its children."""
    seq = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 32))
    blk = GlobalContextBlock(32, context=AvgPool(), transform=seq, fusion=ScaleFusion(), name="mine")
    with torch.no_grad():
        for p in seq.parameters():
            p.fill_(7.0)
    torch.manual_seed(1)
    blk.reset_parameters()
    assert all((p != 7.0).all() for p in seq.parameters())
    torch.manual_seed(1)
    ref = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 32))
    torch.manual_seed(1)
    ref[0].reset_parameters(), ref[2].reset_parameters()
    for a, b in zip(seq.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"^mine: expected 32 channels"):
        blk(torch.randn(2, 16, 4, 4))


def test_timm_style_init_keeps_identity():
    """timm's ``ResNet.init_weights`` calls ``m.zero_init_last()`` on every module having it."""
    blk = globalctx.create_block("se", 32, init="identity")
    for m in blk.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight)  # a blanket re-init of the host network
    for m in blk.modules():
        if hasattr(m, "zero_init_last"):
            m.zero_init_last()
    x = torch.randn(2, 32, 5, 5)
    assert torch.equal(blk(x), x)


@pytest.mark.parametrize("name,kw", [("gc", {}), ("gc", dict(pooling="avg")), ("snl", {})])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_add_fusion_identity_at_init(name, kw, dims):
    blk = globalctx.create_block(name, 16, **kw)
    x = torch.randn(SHAPES[dims])
    assert torch.equal(blk(x), x)
    randomize(blk)
    blk.reset_parameters()  # reset_parameters restores the identity
    assert torch.equal(blk(x), x)


def test_mul_fusion_at_init():
    x = torch.randn(2, 16, 5, 5)
    half = globalctx.create_block("gc", 16, fusion="mul")
    torch.testing.assert_close(half(x), 0.5 * x)  # documented: sigmoid(0) = 0.5
    ident = globalctx.create_block("gc", 16, fusion=("add", "mul"), identity_init=True)
    assert torch.equal(ident(x), x)
    se_ident = globalctx.create_block("se", 16, rd_ratio=1 / 4, zero_init_last=True, identity_init=True)
    assert torch.equal(se_ident(x), x)


def test_zero_init_last_zeroes_bias_too():
    blk = globalctx.create_block("gc", 64)
    assert torch.count_nonzero(blk.transform.fc2.weight) == 0
    assert torch.count_nonzero(blk.transform.fc2.bias) == 0
    off = globalctx.create_block("gc", 64, zero_init_last=False)
    assert torch.count_nonzero(off.transform.fc2.weight) > 0


@pytest.mark.parametrize(
    "name,channels,kw,expected",
    [
        ("gc", 256, {}, 8_753),
        ("gc", 512, {}, 33_889),
        ("gc", 1024, {}, 133_313),
        ("gc", 2048, {}, 528_769),
        ("gc", 256, dict(rd_ratio=1 / 4), 33_473),
        ("gc", 2048, dict(rd_ratio=1 / 4), 2_102_785),
        ("se", 256, dict(rd_ratio=1 / 16), 8_464),
        ("se", 256, dict(bias=False), 8_192),
        ("snl", 1024, {}, 1_049_601),
        ("snl", 1024, dict(bias=True), 1_050_625),
    ],
)
def test_parameter_counts(name, channels, kw, expected):
    blk = globalctx.create_block(name, channels, **kw)
    assert sum(p.numel() for p in blk.parameters()) == expected


@pytest.mark.parametrize(
    "name,kw",
    [
        ("gc", {}),
        ("gc", dict(fusion=("add", "mul"))),
        ("gc", dict(pooling="avg", fusion="mul")),
        ("se", {}),
        ("snl", {}),
    ],
)
@pytest.mark.parametrize("dims", [1, 2])
def test_gradcheck(name, kw, dims):
    blk = randomize(globalctx.create_block(name, 8, rd_channels=2, **kw) if name != "snl" else
                    globalctx.create_block(name, 8)).double()
    x = torch.randn((2, 8, 3, 3)[: 2 + dims], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x,), eps=1e-6, atol=1e-5)
    # every parameter receives a gradient
    blk.zero_grad()
    blk(x).square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in blk.parameters())


@pytest.mark.parametrize("name", ["gc", "se", "snl"])
def test_bf16_finite_on_large_activations(name):
    blk = randomize(globalctx.create_block(name, 64)).bfloat16()
    x = (torch.randn(2, 64, 14, 14) * 1e3).bfloat16()
    y = blk(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = randomize(globalctx.create_block(name, 64))(x.float())
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name,kw", [("gc", {}), ("gc", dict(fusion=("add", "mul"))), ("se", {}), ("snl", {})])
def test_torchscript(name, kw):
    blk = randomize(globalctx.create_block(name, 32, **kw)).eval()
    scripted = torch.jit.script(blk)
    for shape in [(2, 32, 11), (2, 32, 5, 6), (1, 32, 2, 3, 3)]:
        x = torch.randn(shape)
        torch.testing.assert_close(scripted(x), blk(x), rtol=1e-5, atol=1e-5)


def test_torch_compile():
    blk = randomize(globalctx.create_block("gc", 32)).eval()
    compiled = torch.compile(blk, backend="aot_eager", fullgraph=True)
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(compiled(x), blk(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["gc", "se", "snl"])
def test_eval_determinism(name):
    blk = randomize(globalctx.create_block(name, 32)).eval()
    x = torch.randn(4, 32, 9, 9)
    assert torch.equal(blk(x), blk(x))


def test_parts_shapes():
    x = torch.randn(2, 12, 4, 5)
    assert AvgPool()(x).shape == (2, 12)
    assert AttnPool(12)(x).shape == (2, 12)
    a = AttnPool(12).attention(x)
    assert a.shape == (2, 20)
    torch.testing.assert_close(a.sum(-1), torch.ones(2))
    assert ScaleFusion()(x, torch.zeros(2, 12)).shape == x.shape
