"""Shared by the block reference tests: the comparison dtype and tolerance."""

import torch

DT = torch.float64


def close(a, b, tol=1e-10):
    """Same shape and equal within ``tol`` (absolute and relative)."""
    assert a.shape == b.shape
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)
