"""Fusion parts: ``(x [N, C, *S], t [N, C]) -> [N, C, *S]`` (GCNet §3.2, third stage).

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AddFusion", "ScaleFusion", "ScaleAddFusion", "broadcast_channels"]


def broadcast_channels(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View ``t [N, C]`` as ``[N, C, 1, ...]`` to broadcast against ``x [N, C, *S]``."""
    return t.reshape(t.shape + (1,) * (x.dim() - 2))  # [N, C, 1, ...]


class AddFusion(nn.Module):
    """``y = x + t`` broadcast over positions (GC ``channel_add``, SNL).

    Exact identity when ``t == 0`` (zero-initialised last transform layer).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + broadcast_channels(t.to(x.dtype), x)


class ScaleFusion(nn.Module):
    """``y = x * gate(t)`` with ``gate`` = sigmoid (SE family, GC ``channel_mul``).

    With a zero-initialised transform the sigmoid gate is ``sigmoid(0) = 0.5``, so the block
    halves its input at init. ``identity_init=True`` uses ``2 * sigmoid(t)`` instead, a gate
    that is exactly 1 at ``t = 0`` (same range shape, doubled), so a block inserted into a
    pretrained network leaves it unchanged.

    Args:
        identity_init: use ``2 * sigmoid(t)``. Default: ``False`` (the papers' gate).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def __init__(self, *, identity_init: bool = False):
        super().__init__()
        self.identity_init = identity_init

    def reset_parameters(self) -> None:
        pass

    def gate(self, t: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(t)
        return 2.0 * g if self.identity_init else g

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * broadcast_channels(self.gate(t).to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"identity_init={self.identity_init}"


class ScaleAddFusion(nn.Module):
    """GC with both fusions, as mmcv: ``y = x * gate(t_mul) + t_add``.

    Takes the stacked transforms ``t [N, 2, C]`` (``t[:, 0]`` mul branch, ``t[:, 1]`` add branch).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, 2, C]``
        - Output: ``[N, C, *S]``
    """

    def __init__(self, *, identity_init: bool = False):
        super().__init__()
        self.scale = ScaleFusion(identity_init=identity_init)
        self.add = AddFusion()

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.add(self.scale(x, t[:, 0]), t[:, 1])
