"""``dia`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from globalctx.layers.blocks.dia import DIAStage
from reference_utils import DT, close


# ---------------------------------------------------------------- DIANet (official LSTMCell + stage loop)
class RefSmallCell(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(i, i // 4), nn.ReLU(), nn.Linear(i // 4, 4 * h))

    def forward(self, x):
        return self.seq(x)


class RefDIACell(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.w_ih = RefSmallCell(c, c)
        self.w_hh = RefSmallCell(c, c)

    def forward(self, z, hx, cx):
        gates = self.w_ih(z) + self.w_hh(hx)
        i, f, g, o = gates.chunk(4, 1)
        ncx = torch.sigmoid(f) * cx + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.sigmoid(ncx), ncx


class _Branch(nn.Module):
    """A toy residual block: conv branch -> attention -> + identity -> ReLU."""

    def __init__(self, c, attn):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.attn = attn

    def forward(self, x):
        return F.relu(self.attn(self.conv(x)) + x)


def test_dia_stage_matches_reference():
    c = 16
    blocks = [_Branch(c, create_block("dia", c)) for _ in range(3)]
    stage = DIAStage(blocks).to(DT)
    cell = stage.cell
    assert all(b.attn.transform is cell for b in stage.blocks)
    n_params = sum(p.numel() for p in stage.parameters())
    assert n_params == 3 * (c * c * 9 + c) + sum(p.numel() for p in cell.parameters())
    ref = RefDIACell(c).to(DT)
    with torch.no_grad():
        ref.w_ih.seq.load_state_dict(cell.w_ih.state_dict())
        ref.w_hh.seq.load_state_dict(cell.w_hh.state_dict())
    x = torch.randn(2, c, 5, 5, dtype=DT)
    y = stage(x)
    # official loop
    h = torch.zeros(2, c, dtype=DT)
    cc = torch.zeros(2, c, dtype=DT)
    r = x
    for b in stage.blocks:
        out = b.conv(r)
        h, cc = ref(out.mean((2, 3)), h, cc)
        r = F.relu(out * h.view(2, c, 1, 1) + r)
    close(y, r)
    # state is reset per forward: a second call gives the same result
    close(stage(x), y)
    assert cell._state is None
