"""The ``se`` preset against the plain reference of ``framework_reference.py``."""

import pytest
import torch

import globalctx
from framework_reference import SHAPES, bottleneck_params, randomize, se_ref


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_se_matches_reference(dims, dtype, tol):
    blk = randomize(globalctx.create_block("se", 16, rd_ratio=1 / 4)).to(dtype)
    x = torch.randn(SHAPES[dims], dtype=dtype)
    with torch.no_grad():
        torch.testing.assert_close(blk(x), se_ref(x, bottleneck_params(blk.transform)), rtol=tol, atol=tol)

