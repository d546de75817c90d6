"""``eca`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- ECA (official eca_layer)
class RefECA(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


def test_eca_matches_reference():
    blk = create_block("eca", 32, kernel_size=5).to(DT)
    ref = RefECA(5).to(DT)
    ref.conv.weight.data.copy_(blk.transform.conv.weight.data)
    x = torch.randn(3, 32, 6, 5, dtype=DT)
    close(blk(x), ref(x))
