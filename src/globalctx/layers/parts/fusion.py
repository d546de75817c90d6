"""Fusion parts: ``(x [N, C, *S], t [N, C]) -> [N, C, *S]`` (GCNet §3.2, third stage).

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims.

**One identity-gate rule.** Every gated fusion takes ``identity_init``. With it, the gate is
rescaled so that it equals its *neutral value* at ``t = 0`` (the value at which the fusion
returns ``x``): ``2 sigmoid(t)`` (neutral 1) for :class:`ScaleFusion`, ``2 sigmoid(t) - 1``
(neutral 0, the gate is added to 1) for :class:`ResidualGateFusion`, ``4 t`` for
:class:`MulFusion` whose zero-initialised DIANet cell outputs ``t = 0.25``. The transform's last
layer is zero-initialised by the preset (``zero_init_last`` of the transform part), so the block
is then an exact identity. :class:`AddFusion` and :class:`TanhGateFusion` are neutral at
``t = 0`` already and take no option.
"""

from __future__ import annotations

import torch

from .base import Part

__all__ = [
    "AddFusion",
    "MulFusion",
    "ResidualGateFusion",
    "ScaleAddFusion",
    "ScaleFusion",
    "TanhGateFusion",
    "broadcast_channels",
]


def broadcast_channels(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View ``t [N, C]`` as ``[N, C, 1, ...]`` to broadcast against ``x [N, C, *S]``."""
    return t.reshape(t.shape + (1,) * (x.dim() - 2))  # [N, C, 1, ...]


class AddFusion(Part):
    """``y = x + t`` broadcast over positions (GC ``channel_add``, SNL).

    Exact identity when ``t == 0`` (zero-initialised last transform layer).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + broadcast_channels(t.to(x.dtype), x)


class ScaleFusion(Part):
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

    def gate(self, t: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(t)
        return 2.0 * g if self.identity_init else g

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * broadcast_channels(self.gate(t).to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"identity_init={self.identity_init}"


class ScaleAddFusion(Part):
    """GC with both fusions, as mmcv: ``y = x * gate(t_mul) + t_add``.

    Takes the stacked transforms ``t [N, 2, C]`` (``t[:, 0]`` mul branch, ``t[:, 1]`` add branch).

    Args:
        identity_init: the mul gate is ``2 * sigmoid`` (see :class:`ScaleFusion`). Default: ``False``.

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, 2, C]``
        - Output: ``[N, C, *S]``
    """

    def __init__(self, *, identity_init: bool = False):
        super().__init__()
        self.scale = ScaleFusion(identity_init=identity_init)
        self.add = AddFusion()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.add(self.scale(x, t[:, 0]), t[:, 1])


class MulFusion(Part):
    """``y = x * (scale * t)``: the transform output is already the gate (DIANet's hidden state).

    Args:
        identity_init: ``scale = 4``, the neutral factor for a zero-initialised DIANet cell
            (``h = 0.25``). Default: ``False`` (``scale = 1``, the paper).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def __init__(self, *, identity_init: bool = False):
        super().__init__()
        self.identity_init = identity_init
        self.scale = 4.0 if identity_init else 1.0

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            t = t * self.scale
        return x * broadcast_channels(t.to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class TanhGateFusion(Part):
    """``y = x * (1 + tanh(t))`` (GCT, Yang et al., CVPR 2020, arXiv 1909.11519).

    Exact identity at ``t = 0`` (GCT's ``gamma = beta = 0`` init).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gate = 1.0 + torch.tanh(t)
        return x * broadcast_channels(gate.to(x.dtype), x)


class ResidualGateFusion(Part):
    """EncNet's fusion ``y = ReLU(x + x * sigmoid(t))`` (Zhang et al., CVPR 2018, arXiv 1803.08904).

    Args:
        identity_init: use the gate ``2 * sigmoid(t) - 1`` (0 at ``t = 0``) so that, with a
            zero-initialised transform, ``y = ReLU(x)``; that is ``x`` itself for the usual
            non-negative (post-ReLU) input of an EncNet head. Default: ``False``.
        final_relu: apply the output ReLU (official). Default: ``True``.

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def __init__(self, *, identity_init: bool = False, final_relu: bool = True):
        super().__init__()
        self.identity_init = identity_init
        self.final_relu = final_relu

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(t)
        if self.identity_init:
            g = 2.0 * g - 1.0
        y = x + x * broadcast_channels(g.to(x.dtype), x)
        # ReLU as a select: relu's backward reads its output, which a host's in-place
        # `out += identity` would modify; NaN propagates as with relu
        return torch.where(y <= 0, 0.0, y) if self.final_relu else y

    def extra_repr(self) -> str:
        return f"identity_init={self.identity_init}, final_relu={self.final_relu}"
