"""GSoP-Net1 channel attention, re-implemented from the official code.

Repository: ZilinGao/Global-Second-order-Pooling-Convolutional-Networks,
commit 662a6996623f8e2783291fc5efaa16cc30d227ac.

- ``torchvision/models/resnet.py`` L90-110 (layers), L155-171 (``chan_att``), L198-247
  (``Bottleneck.forward``: ``attention == '1'`` gates ``bn3``'s output before the residual add).
- ``torchvision/models/MPNCOV/python/MPNCOV.py`` L5-19 (``Covpool``: ``X I_hat X^T`` with
  ``I_hat = (I - 11^T / M) / M``, ``M = H W``).
- ``main.py`` L131: ResNet-50 ``attpos`` puts the block in the last bottleneck of each stage.

``chan_att`` layer by layer (L155-171):

1. ``relu_normal`` (ReLU, not in place) on the input;
2. ``conv_for_DR``: 1x1 conv ``C -> d`` **with bias**, stride 2 when ``planes <= 64`` (stage 1),
   else 1 (L91-99);
3. ``bn_for_DR`` (BatchNorm2d ``d``), ReLU;
4. ``CovpoolLayer`` -> ``[N, d, d]``, viewed as ``[N, d, d, 1]``;
5. ``row_bn`` (BatchNorm2d ``d``: statistics per row);
6. ``row_conv_group``: Conv2d ``d -> 4d``, kernel ``(d, 1)``, ``groups=d``, **with bias**;
7. **no activation**;
8. ``fc_adapt_channels``: 1x1 conv ``4d -> C`` **with bias**;
9. sigmoid; the block output is ``x * att``.

Parameter names are the official ones, so an official checkpoint's ``layerK.M.*`` entries load
into :class:`GSoPChannelAttention` directly.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["covpool", "GSoPChannelAttention", "copy_from_ours"]


def covpool(x: torch.Tensor) -> torch.Tensor:
    """MPNCOV ``Covpool.forward`` (MPNCOV.py L7-19): ``y = X I_hat X^T``.

    One change for float64 comparisons: the official code builds ``I_hat`` in the default dtype
    (fp32) and then casts it to ``x.dtype`` (L15-16), which limits a float64 run to about 1e-8;
    here ``I_hat`` is built in ``x.dtype`` (identical in fp32).

    Shape:
        - Input: ``[N, d, H, W]``
        - Output: ``[N, d, d]``
    """
    n, d, h, w = x.shape
    m = h * w
    x = x.reshape(n, d, m)  # [N, d, M]
    dd = {"device": x.device, "dtype": x.dtype}
    i_hat = (-1.0 / m / m) * torch.ones(m, m, **dd) + (1.0 / m) * torch.eye(m, m, **dd)
    i_hat = i_hat.view(1, m, m).repeat(n, 1, 1)  # [N, M, M]
    return x.bmm(i_hat).bmm(x.transpose(1, 2))  # [N, d, d]


class GSoPChannelAttention(nn.Module):
    """``x * chan_att(x)`` of the official GSoP-Net1 bottleneck (``attention='1'``).

    Args:
        channels: ``C = planes * 4``.
        att_dim: ``d``. Default: ``128``.
        dr_stride: stride of ``conv_for_DR`` (official: 2 in stage 1, else 1). Default: ``1``.

    Shape:
        - Input: ``[N, C, H, W]``
        - Output: ``[N, C, H, W]``
    """

    def __init__(self, channels: int, att_dim: int = 128, dr_stride: int = 1):
        super().__init__()
        self.ch_dim = att_dim
        self.relu_normal = nn.ReLU(inplace=False)
        self.conv_for_DR = nn.Conv2d(channels, att_dim, kernel_size=1, stride=dr_stride, bias=True)
        self.bn_for_DR = nn.BatchNorm2d(att_dim)
        self.relu = nn.ReLU(inplace=True)
        self.row_bn = nn.BatchNorm2d(att_dim)
        self.row_conv_group = nn.Conv2d(att_dim, 4 * att_dim, kernel_size=(att_dim, 1), groups=att_dim, bias=True)
        self.fc_adapt_channels = nn.Conv2d(4 * att_dim, channels, kernel_size=1, groups=1, bias=True)
        self.sigmoid = nn.Sigmoid()

    def chan_att(self, out: torch.Tensor) -> torch.Tensor:
        out = self.relu_normal(out)
        out = self.conv_for_DR(out)
        out = self.bn_for_DR(out)
        out = self.relu(out)
        out = covpool(out)  # [N, d, d]
        out = out.view(out.size(0), out.size(1), out.size(2), 1).contiguous()  # [N, d, d, 1]
        out = self.row_bn(out)
        out = self.row_conv_group(out)  # [N, 4d, 1, 1]
        out = self.fc_adapt_channels(out)  # [N, C, 1, 1]
        return self.sigmoid(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.chan_att(x)


def copy_from_ours(ref: GSoPChannelAttention, ours: nn.Module) -> None:
    """Copy our ``gsop`` block's weights (``context.*``, ``transform.*`` keys) into ``ref``.

    Ours stores the 1x1 convs as linear ``[out, in]`` weights and the row-wise group conv as
    ``[4d, d]`` (output ``o`` reads row ``o // 4``, as the official group conv).
    """
    from . import copy_tensors

    s = ours.state_dict()
    d = ref.ch_dim
    t = {
        "conv_for_DR.weight": s["context.reduce.weight"][:, :, None, None],
        "conv_for_DR.bias": s["context.reduce.bias"],
        "row_conv_group.weight": s["transform.weight"].reshape(4 * d, 1, d, 1),
        "row_conv_group.bias": s["transform.bias"],
        "fc_adapt_channels.weight": s["transform.fc.weight"][:, :, None, None],
        "fc_adapt_channels.bias": s["transform.fc.bias"],
    }
    for ref_bn, our_bn in (("bn_for_DR", "context.bn"), ("row_bn", "transform.row_bn")):
        for p in ("weight", "bias", "running_mean", "running_var"):
            t[f"{ref_bn}.{p}"] = s[f"{our_bn}.{p}"]
    copy_tensors(ref, t)
