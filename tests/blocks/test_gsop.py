"""``gsop`` against a plain re-implementation of the official module (2D, convs and loops as in
the paper's code), with the weights copied over."""

import torch
import torch.nn.functional as F
from torch import nn

from covariance_reference import ref_covpool
from globalctx.layers import create_block
from reference_utils import DT, close


# ---------------------------------------------------------------- GSoP-Net1 (official chan_att)
class RefGSoP(nn.Module):
    """``x * chan_att(x)`` written from the official code, layer by layer.

    Repository ZilinGao/Global-Second-order-Pooling-Convolutional-Networks, commit
    d3a757a7f6f79cfff7e985a6045526719c7b53c1, ``torchvision/models/resnet.py``:
    ``Bottleneck.__init__`` (``conv_for_DR`` 1x1 with bias, ``bn_for_DR``, ``row_bn``,
    ``row_conv_group`` kernel ``(d, 1)`` groups ``d`` with bias, ``fc_adapt_channels`` 1x1 with
    bias) and ``chan_att``: ``relu_normal`` -> ``conv_for_DR`` -> ``bn_for_DR`` -> ``relu`` ->
    ``CovpoolLayer`` -> view ``[N, d, d, 1]`` -> ``row_bn`` -> ``row_conv_group`` ->
    ``fc_adapt_channels`` -> sigmoid. No activation between ``row_conv_group`` and
    ``fc_adapt_channels`` (only ``pos_att`` has one there).
    """

    def __init__(self, c, d):
        super().__init__()
        self.conv_for_DR = nn.Conv2d(c, d, 1, bias=True)
        self.bn_for_DR = nn.BatchNorm2d(d)
        self.row_bn = nn.BatchNorm2d(d)
        self.row_conv_group = nn.Conv2d(d, 4 * d, kernel_size=(d, 1), groups=d, bias=True)
        self.fc_adapt_channels = nn.Conv2d(4 * d, c, 1, bias=True)

    def forward(self, x):
        out = F.relu(x)
        out = F.relu(self.bn_for_DR(self.conv_for_DR(out)))
        out = ref_covpool(out)
        out = out.view(out.size(0), out.size(1), out.size(2), 1)
        out = self.row_conv_group(self.row_bn(out))  # [N, 4d, 1, 1], no activation
        return x * torch.sigmoid(self.fc_adapt_channels(out))


def test_gsop_matches_reference():
    c, d = 24, 8
    blk = create_block("gsop", c, cov_channels=d).to(DT)
    ref = RefGSoP(c, d).to(DT)
    ctx, tr = blk.context, blk.transform
    with torch.no_grad():
        for bn in (ctx.bn, tr.row_bn):
            bn.weight.normal_()
            bn.bias.normal_()
        ref.conv_for_DR.weight.copy_(ctx.reduce.weight.view(d, c, 1, 1))
        ref.conv_for_DR.bias.copy_(ctx.reduce.bias)
        ref.bn_for_DR.load_state_dict(ctx.bn.state_dict())
        ref.row_bn.load_state_dict(tr.row_bn.state_dict())
        ref.row_conv_group.weight.copy_(tr.weight.view(4 * d, 1, d, 1))
        ref.row_conv_group.bias.copy_(tr.bias)
        ref.fc_adapt_channels.weight.copy_(tr.fc.weight.view(c, 4 * d, 1, 1))
        ref.fc_adapt_channels.bias.copy_(tr.fc.bias)
    x = torch.randn(3, c, 6, 5, dtype=DT)
    close(blk(x), ref(x), 1e-9)
