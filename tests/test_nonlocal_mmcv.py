"""With converted weights our NL equals mmcv-lite's NonLocal1d/2d/3d (all four modes) to 1e-5."""

from __future__ import annotations

import pytest
import torch

import globalctx
from globalctx.layers import NonLocal

non_local = pytest.importorskip("mmcv.cnn.bricks.non_local", reason="mmcv-lite is an optional dependency")

MMCV = {1: non_local.NonLocal1d, 2: non_local.NonLocal2d, 3: non_local.NonLocal3d}
BN = {1: "BN1d", 2: "BN", 3: "BN3d"}
SHAPES = {1: (2, 16, 12), 2: (2, 16, 6, 8), 3: (2, 16, 2, 4, 6)}
MODES = ["embedded_gaussian", "gaussian", "dot_product", "concatenation"]


def mmcv_block(dims, mode, sub_sample, norm):
    ref = MMCV[dims](16, reduction=2, mode=mode, sub_sample=sub_sample, norm_cfg=dict(type=BN[dims]) if norm else None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero everywhere, conv_out included (zero-init would hide the math)
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, b in ref.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return ref.eval()


def ours_for(mode, sub_sample, norm):
    return NonLocal(
        16, pairwise=mode, subsample=sub_sample, subsample_order="embed_first", norm=norm, out_bias=not norm
    ).eval()


@pytest.mark.parametrize("norm", [False, True], ids=["plain", "bn"])
@pytest.mark.parametrize("sub_sample", [False, True], ids=["full", "sub"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_matches_mmcv_nonlocal(dims, mode, sub_sample, norm):
    ref = mmcv_block(dims, mode, sub_sample, norm)
    ours = globalctx.convert.from_mmcv(ours_for(mode, sub_sample, norm), ref.state_dict(), spatial_dims=dims)
    x = torch.randn(SHAPES[dims])
    with torch.no_grad():
        y_ref, y = ref(x), ours(x)
    assert (y_ref - x).abs().max() > 1e-2  # the block contributes
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    # and back: to_mmcv reproduces the original state dict exactly
    back = globalctx.convert.to_mmcv(ours, spatial_dims=dims)
    assert back.keys() == ref.state_dict().keys()
    for k, v in ref.state_dict().items():
        assert torch.equal(back[k], v), k


def test_mmcv_default_block_is_identity_too():
    ref = non_local.NonLocal2d(16, norm_cfg=dict(type="BN")).eval()  # mmcv zero-inits the BN
    ours = globalctx.convert.from_mmcv(ours_for("embedded_gaussian", False, True), ref.state_dict())
    x = torch.randn(SHAPES[2])
    with torch.no_grad():
        assert torch.equal(ours(x), x)


def test_converter_errors():
    ref = mmcv_block(2, "embedded_gaussian", True, False)
    pool_first = NonLocal(16, subsample=True, norm=False)
    with pytest.raises(ValueError, match="embed_first"):
        globalctx.convert.from_mmcv(pool_first, ref.state_dict())
    with_bias = NonLocal(16, norm=True, out_bias=True)  # mmcv drops conv_out's bias before a norm
    ref_bn = mmcv_block(2, "embedded_gaussian", False, True)
    with pytest.raises(ValueError, match="missing"):
        globalctx.convert.from_mmcv(with_bias, ref_bn.state_dict())
