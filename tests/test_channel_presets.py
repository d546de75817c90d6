"""Common properties of the channel-attention presets: parameter counts, gradcheck, bf16,
1D/3D inputs, identity at insertion, validation errors and per-block edge cases."""

import pytest
import torch
from torch import nn

from globalctx.layers import GlobalContextBlock, create_block
from globalctx.layers.blocks.dia import DIAStage
from globalctx.layers.blocks.eca import eca_kernel_size
from globalctx.layers.blocks.soca import CovSqrtPool
from globalctx.layers.parts.covariance import covariance_pool, newton_schulz_sqrt
from reference_utils import perturb_parameters

PRESETS = ["eca", "fca", "srm", "gct", "gsop", "soca", "enc", "rcan", "dia", "ban"]
# small but valid options per preset (C = 32)
SMALL = {"gsop": {"cov_channels": 4}, "enc": {"num_codes": 4}, "ban": {"rd_ratio": 1 / 8}, "fca": {"freq_sel": "top4"}}
IDENTITY = {
    "eca": {"zero_init_last": True, "identity_init": True},
    "fca": {"zero_init_last": True, "identity_init": True},
    "srm": {"identity_init": True},
    "gct": {},
    "gsop": {"zero_init_last": True, "identity_init": True},
    "soca": {"zero_init_last": True, "identity_init": True},
    "enc": {"zero_init_last": True, "identity_init": True, "final_relu": False},
    "rcan": {"zero_init_last": True, "identity_init": True},
    "dia": {"identity_init": True},
    "ban": {"identity_init": True},
}


def _n(m):
    return sum(p.numel() for p in m.parameters())



@pytest.mark.parametrize(
    "name,channels,opts,expected",
    [
        ("srm", 256, {}, 1_024),
        ("gct", 256, {}, 768),
        ("fca", 256, {}, 8_192),
        ("rcan", 64, {}, 580),
        ("soca", 64, {}, 580),
        ("enc", 512, {"num_classes": 59}, 572_571),
        ("gsop", 256, {}, 641 * 256 + 66_688),
        ("eca", 256, {}, 5),
        ("eca", 2048, {}, 7),
    ],
)
def test_official_parameter_counts(name, channels, opts, expected):
    assert _n(create_block(name, channels, **opts)) == expected


def test_gsop_resnet50_total_matches_research_table():
    # one GSoP-Net1 block per stage of ResNet-50: +2,728,192 (research tables, computed)
    assert sum(_n(create_block("gsop", c)) for c in (256, 512, 1024, 2048)) == 2_728_192


def test_eca_kernel_rule_and_released_resnet50():
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    released = sum(
        n * _n(create_block("eca", c, kernel_size=k))
        for n, c, k in [(3, 256, 3), (4, 512, 5), (6, 1024, 5), (3, 2048, 7)]
    )
    assert released == 80  # the paper's "80 extra parameters" for ECA-Net50


@pytest.mark.parametrize("name", PRESETS)
def test_gradcheck_float64(name):
    blk = create_block(name, 32, **SMALL.get(name, {}), dtype=torch.float64)
    perturb_parameters(blk)
    x = torch.randn(2, 32, 7, 7 if name == "fca" else 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(blk, (x,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("name", PRESETS)
def test_bf16_forward_backward_finite(name):
    blk = create_block(name, 32, **SMALL.get(name, {}), dtype=torch.bfloat16)
    x = torch.randn(2, 32, 8, 8, dtype=torch.bfloat16, requires_grad=True)
    y = blk(x)
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all()
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in blk.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "fca"])
@pytest.mark.parametrize("shape", [(2, 32, 9), (2, 32, 3, 4, 5)])
def test_1d_and_3d_inputs(name, shape):
    blk = create_block(name, 32, **SMALL.get(name, {}))
    x = torch.randn(*shape)
    y = blk(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(2, 32, 9), (2, 32, 3, 7, 7)])
def test_fca_rejects_non_2d(shape):
    blk = create_block("fca", 32, freq_sel="top4")
    with pytest.raises(ValueError, match="2D"):
        blk(torch.randn(*shape))


@pytest.mark.parametrize("name", PRESETS)
def test_identity_at_insertion(name):
    blk = create_block(name, 32, **SMALL.get(name, {}), **IDENTITY[name])
    x = torch.randn(3, 32, 7, 7)
    torch.testing.assert_close(blk(x), x, rtol=0, atol=1e-6)
    blk.eval()
    torch.testing.assert_close(blk(x), x, rtol=0, atol=1e-6)


def test_official_init_is_not_identity_where_documented():
    x = torch.randn(3, 32, 7, 7)
    # SRM: zero CFC -> BN(0) = 0 -> gate exactly 0.5
    torch.testing.assert_close(create_block("srm", 32)(x), 0.5 * x)
    # DIA with zero-initialised cells: h = 0.25 (before the x4 of identity_init)
    blk = create_block("dia", 32, identity_init=True)
    torch.testing.assert_close(blk.transform(torch.randn(3, 32)), torch.full((3, 32), 0.25))
    for name in ("eca", "fca", "rcan", "soca", "gsop", "ban", "enc"):
        y = create_block(name, 32, **SMALL.get(name, {}))(x)
        assert not torch.allclose(y, x, atol=1e-3), name


def test_gct_no_weight_decay_names_and_identity():
    blk = create_block("gct", 256)
    names = blk.no_weight_decay()
    assert names == {"transform.beta"}
    assert names <= dict(blk.named_parameters()).keys()
    with torch.no_grad():
        blk.transform.gamma.fill_(1.0)
    blk.reset_parameters()
    x = torch.randn(2, 256, 4, 4)
    assert torch.equal(blk(x), x)


def test_gct_bad_mode_raises_value_error():
    with pytest.raises(ValueError, match="mode"):
        create_block("gct", 16, mode="l3")


def test_srm_no_weight_decay_lists_all_parameters():
    blk = create_block("srm", 16)
    assert blk.no_weight_decay() == dict(blk.named_parameters()).keys()


def test_srm_batch_one_train_mode_and_single_position():
    blk = create_block("srm", 16).train()
    perturb_parameters(blk)
    before = blk.transform.bn.running_mean.clone()
    y = blk(torch.randn(1, 16, 5, 5))
    assert torch.isfinite(y).all()
    assert torch.equal(blk.transform.bn.running_mean, before)  # running stats used, not updated
    y = blk(torch.randn(4, 16, 1, 1))  # 1x1 maps: unbiased variance would be NaN
    assert torch.isfinite(y).all()
    y = blk(torch.randn(1, 16, 1, 1))
    assert torch.isfinite(y).all()


def test_style_pool_matches_var_mean_with_offset_mean():
    from globalctx.layers.blocks.srm import StylePool

    x = 3.0 + torch.randn(4, 8, 20, 20)  # |mean| = 3 std: the one-pass variance must stay accurate
    var, mean = torch.var_mean(x.double().flatten(2), dim=-1)
    u = StylePool()(x)
    torch.testing.assert_close(u[..., 0], mean.float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(u[..., 1], (var + 1e-5).sqrt().float(), rtol=1e-4, atol=1e-5)


def test_fca_validation():
    with pytest.raises(ValueError, match="divisible"):
        create_block("fca", 40)  # 40 % 16 != 0
    with pytest.raises(ValueError, match="freq_sel"):
        create_block("fca", 32, freq_sel="top3")
    with pytest.raises(ValueError, match="dct_size"):
        create_block("fca", 32, dct_size=5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_fca_filters_are_buffers_and_size_rule_is_deterministic():
    blk = create_block("fca", 32, freq_sel="top4", dct_size=7)
    assert "context.filters" in dict(blk.named_buffers())
    assert all("filters" not in n for n, _ in blk.named_parameters())
    x = torch.randn(2, 32, 13, 10, requires_grad=True)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        blk(x).sum().backward()
    finally:
        torch.use_deterministic_algorithms(prev)
    traced = torch.jit.trace(blk, torch.randn(2, 32, 13, 10))
    assert "adaptive" not in str(traced.graph)
    z = torch.randn(2, 32, 13, 10)
    torch.testing.assert_close(traced(z), blk(z))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_fca_onnx_export_at_non_divisible_size():
    """12x9 -> 7x7 is not an integer pooling (the official adaptive_avg_pool2d path has no ONNX op)."""
    onnx = pytest.importorskip("onnx", reason="ONNX export needs the optional onnx package")
    import io

    from onnx.reference import ReferenceEvaluator

    from globalctx.layers.blocks.fca import pool_matrix_cached

    pool_matrix_cached.cache_clear()  # the resize matrices are built while exporting
    blk = create_block("fca", 32, freq_sel="top4").eval()
    x = torch.randn(1, 32, 12, 9)
    buf = io.BytesIO()
    torch.onnx.export(blk, (x,), buf, dynamo=False, input_names=["x"])
    model = onnx.load_from_string(buf.getvalue())
    assert not any("Pool" in node.op_type for node in model.graph.node)
    (y,) = ReferenceEvaluator(model).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(y), blk(x).detach(), rtol=1e-5, atol=1e-5)


def test_soca_newton_schulz_fp32_under_autocast():
    x = torch.randn(2, 16, 6, 6)
    ref = newton_schulz_sqrt(covariance_pool(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cov = covariance_pool(x)
        root = newton_schulz_sqrt(cov.bfloat16())
        z = CovSqrtPool()(x)
    assert cov.dtype == torch.float32 and root.dtype == torch.float32
    torch.testing.assert_close(cov, covariance_pool(x))
    torch.testing.assert_close(root, ref, rtol=2e-2, atol=2e-3)  # only the bf16 rounding of the input
    torch.testing.assert_close(z, CovSqrtPool()(x))
    # all-constant input: zero covariance gives a zero root, not NaN
    assert torch.isfinite(CovSqrtPool()(torch.ones(1, 4, 3, 3))).all()


def test_soca_crop_rule():
    pool = CovSqrtPool(max_size=4)
    x = torch.randn(1, 8, 10, 3)
    torch.testing.assert_close(pool(x), CovSqrtPool(max_size=None)(x[:, :, 3:7, :]))


def test_enc_forward_se_and_errors():
    blk = create_block("enc", 16, num_codes=4, num_classes=7)
    y, logits = blk.forward_se(torch.randn(2, 16, 5, 5))
    assert y.shape == (2, 16, 5, 5) and logits.shape == (2, 7)
    with pytest.raises(ValueError, match="num_classes"):
        create_block("enc", 16, num_codes=4).forward_se(torch.randn(2, 16, 5, 5))


def test_dia_lone_block_is_stateless_and_stage_errors():
    blk = create_block("dia", 16)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(blk(x), blk(x))
    with pytest.raises(ValueError, match="no DIA block"):
        DIAStage([nn.Identity()])
    with pytest.raises(ValueError, match="channels"):
        create_block("dia", 16, cell=create_block("dia", 8).transform)


@pytest.mark.parametrize(
    "name,opts",
    [("rcan", {}), ("soca", {}), ("fca", {"rd_channels": 0}), ("dia", {"rd_ratio": 1 / 64}), ("ban", {})],
)
def test_reduced_width_below_one_raises(name, opts):
    with pytest.raises(ValueError, match="< 1"):
        create_block(name, 8 if name != "fca" else 16, **opts)


@pytest.mark.parametrize("name", PRESETS)
def test_bad_input_raises_value_error(name):
    blk = create_block(name, 32, **SMALL.get(name, {}))
    with pytest.raises(ValueError, match="channels"):
        blk(torch.randn(2, 16, 7, 7))
    with pytest.raises(ValueError):
        blk(torch.randn(2, 32))


def test_eca_even_kernel_and_typo_option():
    with pytest.raises(ValueError, match="odd"):
        create_block("eca", 32, kernel_size=4)
    with pytest.raises(TypeError):
        create_block("eca", 32, kernal_size=3)


@pytest.mark.parametrize("name", [p for p in PRESETS if p != "ban"])
def test_presets_are_framework_blocks(name):
    blk = create_block(name, 32, **SMALL.get(name, {}))
    assert isinstance(blk, GlobalContextBlock)
    blk.reset_parameters()


@pytest.mark.timm
def test_eca_matches_timm_eca_module():
    timm_layers = pytest.importorskip(
        "timm.layers", reason="optional cross-check: timm needs torch>=2.14.1 with torchvision, not in the core env"
    )
    blk = create_block("eca", 64, kernel_size=3)
    ref = timm_layers.EcaModule(64, kernel_size=3)
    ref.conv.weight.data.copy_(blk.transform.conv.weight.data)
    x = torch.randn(2, 64, 5, 5)
    torch.testing.assert_close(blk(x), ref(x))


def test_collect_no_weight_decay_prefixes_module_paths():
    from globalctx.layers import collect_no_weight_decay

    model = nn.Sequential(nn.Conv2d(3, 16, 1), create_block("gct", 16), nn.Sequential(create_block("srm", 16)))
    names = collect_no_weight_decay(model)
    assert names == {"1.transform.beta", "2.0.transform.cfc", "2.0.transform.bn.weight", "2.0.transform.bn.bias"}
    assert names <= dict(model.named_parameters()).keys()
