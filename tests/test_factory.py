"""Registry, reduction widths and error messages."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import globalctx
from globalctx.layers import rd_width


def test_list_blocks_contains_framework_presets():
    names = globalctx.list_blocks()
    assert {"gc", "se", "snl"} <= set(names)
    assert names == sorted(names)


def test_unknown_block_lists_known():
    with pytest.raises(ValueError, match="known blocks: .*gc"):
        globalctx.create_block("gcc", 64)


def test_unknown_option_is_type_error():
    with pytest.raises(TypeError):
        globalctx.create_block("gc", 64, ratio=1 / 4)  # the option is rd_ratio


def test_none_means_no_block_and_callables_pass_through():
    assert globalctx.create_block(None, 64) is None
    assert globalctx.create_block("", 64) is None
    blk = globalctx.create_block(globalctx.layers.blocks.gc.gc_block, 64, rd_ratio=1 / 4)
    assert blk.transform.fc1.out_features == 16


@pytest.mark.parametrize("bad", [dict(pooling="max"), dict(fusion="cat"), dict(fusion=()), dict(fusion=("add", "add"))])
def test_bad_gc_options(bad):
    with pytest.raises(ValueError, match="gc: (pooling|fusion)"):
        globalctx.create_block("gc", 64, **bad)


@pytest.mark.parametrize("name", ["gc", "se"])
def test_zero_width_raises(name):
    with pytest.raises(ValueError, match=r"channels=8 \* rd_ratio=0.0625 gives 0 < 1"):
        globalctx.create_block(name, 8, rd_ratio=1 / 16)
    with pytest.raises(ValueError, match="rd_channels=0"):
        globalctx.create_block(name, 8, rd_channels=0)


def test_rd_width_rounding():
    assert rd_width(256, 1 / 16) == 16  # GC int(C * ratio) == SE C // r
    assert rd_width(100, 1 / 16) == 6  # floor, as official
    assert rd_width(48, 1 / 3) == 16  # no float flooring accident
    assert rd_width(100, 1 / 16, rd_divisor=8) == 8
    assert rd_width(256, rd_channels=7) == 7
    with pytest.raises(ValueError, match="rd_ratio must be a positive number"):
        rd_width(64, -1.0)


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.randn(2, 64), r"expected input \[N, 64, \*S\] with 1..3 spatial dims, got shape \[2, 64\]"),
        (torch.randn(1, 2, 64, 2, 2, 2), r"got shape \[1, 2, 64, 2, 2, 2\]"),
        (torch.randn(2, 32, 4, 4), r"expected 64 channels \(dim 1\), got shape \[2, 32, 4, 4\]"),
        (torch.ones(2, 64, 4, 4, dtype=torch.long), r"floating-point input, got dtype torch.int64"),
        (torch.randn(2, 64, 0, 4), r"spatial dims must be non-empty, got shape \[2, 64, 0, 4\]"),
    ],
)
@pytest.mark.parametrize("name", ["gc", "se", "snl"])
def test_bad_inputs(name, x, match):
    with pytest.raises(ValueError, match=match):
        globalctx.create_block(name, 64)(x)


def test_import_is_light():
    """Importing the package must not pull optional dependencies."""
    code = (
        "import sys, globalctx; bad = [m for m in ('matplotlib', 'mmcv', 'timm', 'tensorboard', "
        "'safetensors', 'skimage') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_catalogue_command(capsys):
    from globalctx.cli import main

    assert main(["blocks", "--shape", "2,32,6,6"]) == 0
    out = capsys.readouterr().out
    for name in ("gc", "se", "snl"):
        assert f"\n{name} " in out
