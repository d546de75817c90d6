"""ECA module, re-implemented from the official code.

Repository: BangguWu/ECANet, commit b332f6b3e6e2afe8a3287dc8ee8440a0fbec74c4.

- ``models/eca_module.py`` L5-28 ``eca_layer(channel, k_size=3)``: global average pool, a
  ``Conv1d(1, 1, k_size, padding=(k_size - 1) // 2, bias=False)`` across channels, sigmoid,
  ``x * y``.
- ``models/eca_resnet.py`` L89-100, L173-182: ``k_size`` is one fixed integer per stage passed in
  by the caller (default ``[3, 3, 3, 3]``); ``main.py`` L65 takes it from ``--ksize``;
  ``README.md`` L64 trains ECA-Net50 with ``--ksize 3557``.
- The adaptive rule ``k = |log2(C) / gamma + b / gamma|_odd`` of the paper appears nowhere in
  the repository (no ``log`` in any ``.py`` file at any commit: ``git log -S"math.log"`` is empty).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["EcaLayer", "RELEASED_ECA_RESNET50_K", "copy_from_ours"]

RELEASED_ECA_RESNET50_K = (3, 5, 5, 7)  # README.md L64: --ksize 3557


class EcaLayer(nn.Module):
    """Official ``eca_layer`` (eca_module.py L5-28).

    Shape:
        - Input: ``[N, C, H, W]``
        - Output: ``[N, C, H, W]``
    """

    def __init__(self, channel: int, k_size: int = 3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # [N, C, 1, 1]
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)  # [N, C, 1, 1]
        y = self.sigmoid(y)
        return x * y.expand_as(x)


def copy_from_ours(ref: EcaLayer, ours: nn.Module) -> None:
    """Our ``eca`` block (``transform.conv.weight [1, 1, k]``) into ``ref``."""
    from . import copy_tensors

    copy_tensors(ref, {"conv.weight": ours.state_dict()["transform.conv.weight"]})
