"""``fca`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- FcaNet (official layer.py)
def _ref_dct_filter(h, w, mx, my, c):
    def bf(pos, freq, n):
        r = math.cos(math.pi * freq * (pos + 0.5) / n) / math.sqrt(n)
        return r if freq == 0 else r * math.sqrt(2)

    filt = torch.zeros(c, h, w, dtype=DT)
    cp = c // len(mx)
    for i, (u, v) in enumerate(zip(mx, my)):
        for tx in range(h):
            for ty in range(w):
                filt[i * cp : (i + 1) * cp, tx, ty] = bf(tx, u, h) * bf(ty, v, w)
    return filt


class RefFca(nn.Module):
    top_x = [0, 0, 6, 0, 0, 1, 1, 4, 5, 1, 3, 0, 0, 0, 3, 2]
    top_y = [0, 1, 0, 5, 2, 0, 2, 0, 0, 6, 0, 4, 6, 3, 5, 2]

    def __init__(self, c, dct, r=16):
        super().__init__()
        self.dct = dct
        mx = [u * (dct // 7) for u in self.top_x]
        my = [v * (dct // 7) for v in self.top_y]
        self.register_buffer("weight", _ref_dct_filter(dct, dct, mx, my, c))
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(), nn.Linear(c // r, c, bias=False))

    def forward(self, x):
        n, c, h, w = x.shape
        xp = x if (h, w) == (self.dct, self.dct) else F.adaptive_avg_pool2d(x, (self.dct, self.dct))
        y = (xp * self.weight).sum(dim=[2, 3])
        return x * torch.sigmoid(self.fc(y)).view(n, c, 1, 1)


@pytest.mark.parametrize("dct,size", [(7, (7, 7)), (14, (14, 14)), (7, (20, 17)), (14, (9, 30))])
def test_fca_matches_reference(dct, size):
    blk = create_block("fca", 32, rd_ratio=1 / 16, dct_size=dct, dtype=DT)
    ref = RefFca(32, dct).to(DT)
    ref.fc[0].weight.data.copy_(blk.transform.fc1.weight.data)
    ref.fc[2].weight.data.copy_(blk.transform.fc2.weight.data)
    x = torch.randn(2, 32, *size, dtype=DT)
    close(blk(x), ref(x))
