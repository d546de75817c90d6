"""Cross-check against mmcv-lite's ContextBlock (the official GCNet layout)."""

from __future__ import annotations

import pytest
import torch

import globalctx

mmcv_bricks = pytest.importorskip("mmcv.cnn.bricks", reason="mmcv-lite not installed (pip install '.[mmcv]')")

COMBOS = [
    ("att", ("channel_add",)),
    ("att", ("channel_mul",)),
    ("att", ("channel_add", "channel_mul")),
    ("avg", ("channel_add",)),
    ("avg", ("channel_mul",)),
    ("avg", ("channel_add", "channel_mul")),
]


def _randomized_mmcv(pooling, fusions, channels=64, ratio=1 / 4):
    ref = mmcv_bricks.ContextBlock(channels, ratio=ratio, pooling_type=pooling, fusion_types=fusions).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    return ref


@pytest.mark.parametrize("pooling,fusions", COMBOS)
def test_from_mmcv_matches_context_block(pooling, fusions):
    ref = _randomized_mmcv(pooling, fusions)
    ours = globalctx.create_block(
        "gc", 64, rd_ratio=1 / 4, pooling=pooling, fusion=tuple(f.split("_")[1] for f in fusions)
    ).eval()
    globalctx.convert.from_mmcv(ours, ref.state_dict())
    x = torch.randn(2, 64, 9, 7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling,fusions", COMBOS)
def test_to_mmcv_round_trip(pooling, fusions):
    ref = mmcv_bricks.ContextBlock(64, ratio=1 / 4, pooling_type=pooling, fusion_types=fusions).eval()
    ours = globalctx.create_block(
        "gc", 64, rd_ratio=1 / 4, pooling=pooling, fusion=tuple(f.split("_")[1] for f in fusions), zero_init_last=False
    ).eval()
    ref.load_state_dict(globalctx.convert.to_mmcv(ours), strict=True)
    x = torch.randn(2, 64, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_default_init_matches_mmcv_structure():
    ref = mmcv_bricks.ContextBlock(256, ratio=1 / 16)
    ours = globalctx.create_block("gc", 256)
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())
    x = torch.randn(1, 256, 4, 4)
    assert torch.equal(ref(x), x) and torch.equal(ours(x), x)  # both identities at init


def test_mismatching_state_dict_is_reported():
    ref = mmcv_bricks.ContextBlock(64, ratio=1 / 4, fusion_types=("channel_mul",))
    ours = globalctx.create_block("gc", 64, rd_ratio=1 / 4)  # add fusion: different keys
    with pytest.raises(ValueError, match="missing .*channel_add_conv.*unexpected .*channel_mul_conv"):
        globalctx.convert.from_mmcv(ours, ref.state_dict())
