"""GCT and the GCT-ResNet bottleneck, re-implemented from the official PyTorch code.

Repository: z-x-yang/GCT, commit 68983edd87f8cfbe709b1b51214c69eb9c81abd7.

- ``PyTorch/GCT.py`` L7-38: ``alpha = 1``, ``gamma = 0``, ``beta = 0`` (each ``[1, C, 1, 1]``,
  L12-14), ``epsilon = 1e-5`` (L9). ``'l2'``: ``embedding = sqrt(sum_HW x^2 + eps) * alpha``
  (a sum, not a mean), ``norm = gamma / sqrt(mean_C(embedding^2) + eps)`` (L21-23); ``'l1'``:
  ``embedding = sum_HW |x| * alpha`` (``x`` itself when ``after_relu``),
  ``norm = gamma / (mean_C |embedding| + eps)`` (L25-31); ``x * (1 + tanh(embedding * norm +
  beta))`` (L36-38).
- ``PyTorch/resnet.py`` L253-354 ``Bottleneck``: a GCT before **every** conv: ``conv1``,
  ``conv2``, ``conv3`` and the shortcut conv (L273-324); the stem conv too (L363-367).
  ``ResNet`` passes ``stride_in_1x1=True`` (L137), so the stride sits on the **first 1x1 conv**
  (L289-292, "The original MSRA ResNet models have stride in the first 1x1 conv"), the 3x3 has
  stride 1. ``relu(bn3(conv3) + identity)`` (L334-354).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GCT", "GCTBottleneck", "copy_gct_from_ours", "copy_bottleneck_from_ours"]


class GCT(nn.Module):
    """Official ``GCT`` (GCT.py L7-38).

    Shape:
        - Input: ``[N, C, H, W]``
        - Output: ``[N, C, H, W]``
    """

    def __init__(self, num_channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, num_channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_channels, 1, 1))
        self.epsilon = epsilon
        self.mode = mode
        self.after_relu = after_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "l2":
            embedding = (x.pow(2).sum((2, 3), keepdim=True) + self.epsilon).pow(0.5) * self.alpha
            norm = self.gamma / (embedding.pow(2).mean(dim=1, keepdim=True) + self.epsilon).pow(0.5)
        elif self.mode == "l1":
            _x = x if self.after_relu else torch.abs(x)
            embedding = _x.sum((2, 3), keepdim=True) * self.alpha
            norm = self.gamma / (torch.abs(embedding).mean(dim=1, keepdim=True) + self.epsilon)
        else:
            raise ValueError(f"mode must be 'l2' or 'l1', got {self.mode!r}")
        gate = 1.0 + torch.tanh(embedding * norm + self.beta)
        return x * gate


class GCTBottleneck(nn.Module):
    """Official GCT ``Bottleneck`` (resnet.py L253-354), ``num_groups=1``, ``dilation=1``.

    Shape:
        - Input: ``[N, in_channels, H, W]``
        - Output: ``[N, out_channels, H / stride, W / stride]``
    """

    def __init__(
        self, in_channels: int, bottleneck_channels: int, out_channels: int, stride: int = 1, stride_in_1x1: bool = True
    ):
        super().__init__()
        self.downsample = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                GCT(in_channels),
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Sequential(
            GCT(in_channels), nn.Conv2d(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False)
        )
        self.bn1 = nn.BatchNorm2d(bottleneck_channels)
        self.conv2 = nn.Sequential(
            GCT(bottleneck_channels),
            nn.Conv2d(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=1, bias=False),
        )
        self.bn2 = nn.BatchNorm2d(bottleneck_channels)
        self.conv3 = nn.Sequential(
            GCT(bottleneck_channels), nn.Conv2d(bottleneck_channels, out_channels, 1, bias=False)
        )
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        return F.relu(out + identity)


def _gct_tensors(prefix: str, s: dict[str, torch.Tensor], our_prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}{p}": s[f"{our_prefix}transform.{p}"].view(1, -1, 1, 1) for p in ("alpha", "gamma", "beta")}


def copy_gct_from_ours(ref: GCT, ours: nn.Module) -> None:
    """Our ``gct`` block (``transform.alpha/gamma/beta`` of shape ``[C]``) into ``ref``."""
    from . import copy_tensors

    copy_tensors(ref, _gct_tensors("", ours.state_dict(), ""))


def copy_bottleneck_from_ours(ref: GCTBottleneck, ours: nn.Module) -> None:
    """Our ResNet ``Bottleneck`` with GCT at ``before_conv`` (slots ``attn_pre1..3``,
    ``attn_pre_down``) into ``ref``."""
    from . import copy_tensors

    s = ours.state_dict()
    t = {}
    for i in (1, 2, 3):
        t.update(_gct_tensors(f"conv{i}.0.", s, f"attn_pre{i}."))
        t[f"conv{i}.1.weight"] = s[f"conv{i}.weight"]
        for p in ("weight", "bias", "running_mean", "running_var"):
            t[f"bn{i}.{p}"] = s[f"bn{i}.{p}"]
    if ref.downsample is not None:
        t.update(_gct_tensors("downsample.0.", s, "attn_pre_down."))
        t["downsample.1.weight"] = s["downsample.0.weight"]
        for p in ("weight", "bias", "running_mean", "running_var"):
            t[f"downsample.2.{p}"] = s[f"downsample.1.{p}"]
    copy_tensors(ref, t)
