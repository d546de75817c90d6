"""AttnPool's own backward (one batched product for dL/dx) against autograd's backward of the same
forward: equal outputs, gradients to rounding, exact higher derivatives, hooks still see the map."""

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import globalctx
from globalctx.layers.parts.context import AttnPool


def _autograd_reference(pool, x):
    xf = x.flatten(2)  # [N, C, L]
    attn = pool._attention_map(xf)  # [N, 1, L]
    return torch.bmm(attn, xf.transpose(1, 2)).squeeze(1)  # [N, C]


@pytest.mark.parametrize("shape", [(2, 16, 5, 7), (3, 8, 11), (1, 4, 2, 3, 4)])
def test_fast_backward_matches_autograd(shape):
    torch.manual_seed(0)
    pool = AttnPool(shape[1])
    x = torch.randn(shape, requires_grad=True)
    y = pool(x)
    assert y.grad_fn is not None and "AttnPoolFn" in type(y.grad_fn).__name__
    y_ref = _autograd_reference(pool, x)
    assert torch.equal(y, y_ref)
    g = torch.randn_like(y)
    params = (x, pool.conv_mask.weight, pool.conv_mask.bias)
    got = torch.autograd.grad(y, params, g)
    want = torch.autograd.grad(y_ref, params, g)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fast_backward_first_and_second_derivatives_fp64():
    torch.manual_seed(0)
    blk = globalctx.create_block("gc", 8, rd_channels=4, zero_init_last=False).double()
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(blk.context, (x,))
    assert gradgradcheck(blk.context, (x,))
    assert gradgradcheck(blk, (x,))


def test_only_requested_gradients_and_frozen_pool():
    torch.manual_seed(0)
    pool = AttnPool(8)
    pool.requires_grad_(False)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    (gx,) = torch.autograd.grad(pool(x).sum(), (x,))
    (gx_ref,) = torch.autograd.grad(_autograd_reference(pool, x).sum(), (x,))
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # no backward recorded: the plain path
        assert pool(x).grad_fn is None
    pool.requires_grad_(True)
    xc = torch.randn(2, 8, 4, 4)  # input without grad, parameters with: weight and bias gradients only
    pool(xc).sum().backward()
    assert pool.conv_mask.weight.grad is not None and pool.conv_mask.bias.grad is not None


def test_softmax_hook_still_sees_the_map_in_training():
    pool = AttnPool(8)
    seen = []
    pool.softmax.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    pool(x).sum().backward()
    assert len(seen) == 1 and seen[0].shape == (2, 1, 9)
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(2, 1))


def test_autocast_training_takes_the_autograd_path():
    pool = AttnPool(8)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pool(x)
    assert "AttnPoolFn" not in type(y.grad_fn).__name__
    y.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
