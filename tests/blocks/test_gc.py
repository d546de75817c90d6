"""The ``gc`` preset against the plain reference of ``framework_reference.py``."""

import pytest
import torch

import globalctx
from framework_reference import SHAPES, bottleneck_params, gc_ref, randomize
from globalctx.layers import AttnPool

GC_CONFIGS = [
    dict(pooling="att", fusion="add"),
    dict(pooling="att", fusion="mul"),
    dict(pooling="att", fusion=("add", "mul")),
    dict(pooling="avg", fusion="add"),
    dict(pooling="avg", fusion="mul"),
    dict(pooling="avg", fusion=("mul", "add")),
]


def gc_reference(blk, x, cfg):
    fusions = (cfg["fusion"],) if isinstance(cfg["fusion"], str) else cfg["fusion"]
    ctx = blk.context
    wk, bk = (ctx.conv_mask.weight[0], ctx.conv_mask.bias[0]) if isinstance(ctx, AttnPool) else (None, None)
    if len(fusions) == 2:
        mul, add = (bottleneck_params(b) for b in blk.transform.branches)
    elif fusions[0] == "add":
        mul, add = None, bottleneck_params(blk.transform)
    else:
        mul, add = bottleneck_params(blk.transform), None
    return gc_ref(x, wk, bk, add=add, mul=mul, pooling=cfg["pooling"])


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("cfg", GC_CONFIGS, ids=lambda c: f"{c['pooling']}-{c['fusion']}")
def test_gc_matches_reference(dims, dtype, tol, cfg):
    blk = randomize(globalctx.create_block("gc", 16, rd_ratio=1 / 4, **cfg)).to(dtype)
    x = torch.randn(SHAPES[dims], dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), gc_reference(blk, x, cfg), rtol=tol, atol=tol)

