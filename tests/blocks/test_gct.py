"""``gct`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import pytest
import torch
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- GCT (official GCT.py)
class RefGCT(nn.Module):
    def __init__(self, c, mode, after_relu=False, eps=1e-5):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.mode, self.after_relu, self.eps = mode, after_relu, eps

    def forward(self, x):
        if self.mode == "l2":
            emb = (x.pow(2).sum((2, 3), keepdim=True) + self.eps).pow(0.5) * self.alpha
            norm = self.gamma / (emb.pow(2).mean(dim=1, keepdim=True) + self.eps).pow(0.5)
        else:
            _x = x if self.after_relu else torch.abs(x)
            emb = _x.sum((2, 3), keepdim=True) * self.alpha
            norm = self.gamma / (torch.abs(emb).mean(dim=1, keepdim=True) + self.eps)
        return x * (1.0 + torch.tanh(emb * norm + self.beta))


@pytest.mark.parametrize("mode", ["l2", "l1"])
def test_gct_matches_reference(mode):
    blk = create_block("gct", 16, mode=mode).to(DT)
    ref = RefGCT(16, mode).to(DT)
    with torch.no_grad():
        for name in ("alpha", "gamma", "beta"):
            p = getattr(blk.transform, name)
            p.normal_()
            getattr(ref, name).copy_(p.view(1, -1, 1, 1))
    x = torch.randn(3, 16, 5, 4, dtype=DT)
    close(blk(x), ref(x))
