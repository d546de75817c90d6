"""``rcan`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
import torch.nn.functional as F
from torch import nn

from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- RCAN CALayer
def test_rcan_matches_reference():
    blk = create_block("rcan", 32).to(DT)
    ref = nn.Sequential(nn.Conv2d(32, 2, 1, bias=True), nn.ReLU(), nn.Conv2d(2, 32, 1, bias=True), nn.Sigmoid()).to(DT)
    with torch.no_grad():
        ref[0].weight.copy_(blk.transform.fc1.weight.view(2, 32, 1, 1))
        ref[0].bias.copy_(blk.transform.fc1.bias)
        ref[2].weight.copy_(blk.transform.fc2.weight.view(32, 2, 1, 1))
        ref[2].bias.copy_(blk.transform.fc2.bias)
    x = torch.randn(2, 32, 5, 5, dtype=DT)
    close(blk(x), x * ref(F.adaptive_avg_pool2d(x, 1)))
