"""Transform parts: ``[N, C] -> [N, C]`` (GCNet §3.2, second stage).

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..helpers import zero_layer
from .base import Part, reset_part

__all__ = ["Mlp", "Bottleneck", "LinearTransform", "StackedTransforms"]


class Mlp(Part):
    """Bottleneck MLP ``C -> C_r -> C``: FC, optional norm, activation, FC (SE, GC).

    The FCs are ``nn.Linear`` on the pooled ``[N, C]`` vector (the same maps as the official 1x1
    convs on ``[N, C, 1, 1]``, at a fraction of the per-call cost). GC's
    ``LayerNorm([C_r, 1, 1])`` is ``nn.LayerNorm(C_r)`` here (same statistics, eps 1e-5).

    Args:
        channels: ``C``.
        rd_channels: ``C_r`` (already resolved, see :func:`~globalctx.layers.helpers.rd_width`).
        norm_layer: ``None`` or a norm type taking ``C_r`` (e.g. ``nn.LayerNorm``). Default: ``None``.
        act_layer: activation type. Default: ``nn.ReLU``.
        bias: bias in both FCs. Default: ``True``.
        zero_init_last: zero the last FC's weight *and* bias so the transform outputs 0 at init
            (stored as ``zero_last``; :meth:`zero_init_last` re-applies it). Default: ``True``.

    Shape:
        - Input: ``[N, C]``
        - Output: ``[N, C]``
    """

    def __init__(
        self,
        channels: int,
        rd_channels: int,
        *,
        norm_layer: Callable[[int], nn.Module] | None = None,
        act_layer: Callable[[], nn.Module] = nn.ReLU,
        bias: bool = True,
        zero_init_last: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.zero_last = zero_init_last
        self.fc1 = nn.Linear(channels, rd_channels, bias=bias, **dd)
        self.norm = norm_layer(rd_channels, **dd) if norm_layer is not None else nn.Identity()
        self.act = act_layer()
        self.fc2 = nn.Linear(rd_channels, channels, bias=bias, **dd)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        reset_part(self.norm)
        if self.zero_last:
            zero_layer(self.fc2)
        else:
            self.fc2.reset_parameters()

    def zero_init_last(self) -> None:
        """Zero the last FC (weight and bias) when built with ``zero_init_last=True``."""
        if self.zero_last:
            zero_layer(self.fc2)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.norm(self.fc1(t))))  # [N, C] -> [N, C_r] -> [N, C]


#: the name the MLP transform had before (kept for existing imports)
Bottleneck = Mlp


class LinearTransform(Part):
    """One linear map ``C -> C`` (SNL's ``W_v``).

    Args:
        channels: ``C``.
        bias: Default: ``True``.
        zero_init_last: zero weight and bias at init (stored as ``zero_last``). Default: ``True``.

    Shape:
        - Input: ``[N, C]``
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, *, bias: bool = True, zero_init_last: bool = True, device=None, dtype=None):
        super().__init__()
        self.zero_last = zero_init_last
        self.fc = nn.Linear(channels, channels, bias=bias, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_last:
            zero_layer(self.fc)
            return
        nn.init.kaiming_uniform_(self.fc.weight, a=math.sqrt(5))
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)

    def zero_init_last(self) -> None:
        """Zero weight and bias when built with ``zero_init_last=True``."""
        if self.zero_last:
            zero_layer(self.fc)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.fc(t)  # [N, C]


class StackedTransforms(Part):
    """Several transforms of the same context, stacked: ``[N, C] -> [N, K, C]``.

    Used for GC's two branches (``channel_mul`` and ``channel_add``), consumed by
    :class:`~globalctx.layers.fusion.ScaleAddFusion`.

    Shape:
        - Input: ``[N, C]``
        - Output: ``[N, K, C]`` with ``K = len(transforms)``
    """

    def __init__(self, *transforms: nn.Module):
        super().__init__()
        self.branches = nn.ModuleList(transforms)

    def reset_parameters(self) -> None:
        for b in self.branches:
            reset_part(b)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return torch.stack([b(t) for b in self.branches], dim=1)  # [N, K, C]
