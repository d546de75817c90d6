"""``srm`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import pytest
import torch
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- SRM (official SRMLayer)
class RefSRM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cfc = nn.Parameter(torch.zeros(c, 2))
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x):
        b, c = x.shape[:2]
        mean = x.view(b, c, -1).mean(-1).unsqueeze(-1)
        std = (x.view(b, c, -1).var(-1) + 1e-5).sqrt().unsqueeze(-1)
        t = torch.cat((mean, std), -1)
        z = (t * self.cfc[None]).sum(2)[:, :, None, None]
        return x * torch.sigmoid(self.bn(z))


@pytest.mark.parametrize("train", [True, False])
def test_srm_matches_reference(train):
    blk = create_block("srm", 16).to(DT)
    ref = RefSRM(16).to(DT)
    with torch.no_grad():
        for p in (blk.transform.cfc, blk.transform.bn.weight, blk.transform.bn.bias):
            p.normal_()
        blk.transform.bn.running_mean.normal_()
        blk.transform.bn.running_var.uniform_(0.5, 2)
    ref.cfc.data.copy_(blk.transform.cfc.data)
    ref.bn.load_state_dict(blk.transform.bn.state_dict())
    blk.train(train)
    ref.train(train)
    x = torch.randn(4, 16, 5, 6, dtype=DT)
    close(blk(x), ref(x))
    close(blk.transform.bn.running_mean, ref.bn.running_mean)
