"""The ``snl`` preset against the plain reference of ``framework_reference.py``."""

import pytest
import torch

import globalctx
from framework_reference import SHAPES, randomize, snl_ref


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("bias", [False, True])
def test_snl_matches_reference(dims, dtype, tol, bias):
    blk = randomize(globalctx.create_block("snl", 16, bias=bias)).to(dtype)
    x = torch.randn(SHAPES[dims], dtype=dtype)
    m, fc = blk.context.conv_mask, blk.transform.fc
    with torch.no_grad():
        torch.testing.assert_close(blk(x), snl_ref(x, m.weight[0], m.bias[0], fc.weight, fc.bias), rtol=tol, atol=tol)

