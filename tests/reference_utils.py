"""Shared by the block reference tests: the comparison dtype and tolerance."""

import torch

DT = torch.float64


def close(a, b, tol=1e-10):
    """Same shape and equal within ``tol`` (absolute and relative)."""
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def perturb_parameters(m):
    """Non-trivial values in every parameter (zero-inits would hide gradient paths and make
    different blocks look equal); EncNet's smoothing factors (``*scale``) stay negative."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("scale"):
                p.uniform_(-1.0, -0.1)
            else:
                p.add_(0.3 * torch.randn_like(p))
    return m


def randomise_bn(net):
    """Non-trivial BN statistics and affine values everywhere (a zero bn3 would hide the blocks);
    returns ``net`` in eval mode."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()
