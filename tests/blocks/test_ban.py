"""``ban`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- BAN (official BilinearAttention)
class RefConvBlock(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.conv = nn.Conv2d(i, o, 1)
        self.bn = nn.BatchNorm2d(o)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class RefBAN(nn.Module):
    def __init__(self, c):
        super().__init__()
        m = c // 16
        self.l1 = RefConvBlock(c, m)
        self.l2 = RefConvBlock(m * (m + 1) // 2, c)
        self.l3 = RefConvBlock(m * (m + 1) // 2, c)

    def forward(self, x):
        inp = x
        x = self.l1(x)
        b, ch, rows, cols = x.shape
        x = x.permute(0, 2, 3, 1).reshape(-1, ch)
        x = torch.bmm(x.unsqueeze(2), x.unsqueeze(1))
        x = torch.cat([torch.diagonal(x, offset=-i, dim1=1, dim2=2) for i in range(ch)], dim=1)
        x = x.view(b, rows, cols, -1).permute(0, 3, 1, 2)
        m_cha = self.l3(F.avg_pool2d(x, x.shape[2:]))
        out = self.l2(x)
        return torch.sigmoid(m_cha * out) * inp


def _copy_cbr(ours, ref):
    c_out, c_in = ours.conv.weight.shape
    ref.conv.weight.data.copy_(ours.conv.weight.data.view(c_out, c_in, 1, 1))
    ref.conv.bias.data.copy_(ours.conv.bias.data)
    ref.bn.load_state_dict(ours.bn.state_dict())


def test_ban_matches_reference():
    blk = create_block("ban", 64).to(DT)
    ref = RefBAN(64).to(DT)
    _copy_cbr(blk.reduce, ref.l1)
    _copy_cbr(blk.outer, ref.l2)
    _copy_cbr(blk.inner, ref.l3)
    x = torch.randn(3, 64, 5, 4, dtype=DT)
    close(blk(x), ref(x))
