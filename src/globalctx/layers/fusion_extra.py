"""Extra fusion parts for the channel-attention family: ``(x [N, C, *S], t [N, C]) -> [N, C, *S]``.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

import torch
from torch import nn

from .fusion import broadcast_channels

__all__ = ["MulFusion", "TanhGateFusion", "ResidualGateFusion"]


class MulFusion(nn.Module):
    """``y = x * (scale * t)``: the transform output is already the gate (DIANet's hidden state).

    Args:
        scale: constant factor. Default: ``1.0`` (DIANet uses ``4.0`` for its identity option,
            where the zero-initialised cell outputs ``h = 0.25``).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def __init__(self, *, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            t = t * self.scale
        return x * broadcast_channels(t.to(x.dtype), x)

    def extra_repr(self) -> str:
        return f"scale={self.scale:g}"


class TanhGateFusion(nn.Module):
    """``y = x * (1 + tanh(t))`` (GCT, Yang et al., CVPR 2020, arXiv 1909.11519).

    Exact identity at ``t = 0`` (GCT's ``gamma = beta = 0`` init).

    Shape:
        - Input: ``x [N, C, *S]``, ``t [N, C]``
        - Output: ``[N, C, *S]``
    """

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gate = 1.0 + torch.tanh(t)
        return x * broadcast_channels(gate.to(x.dtype), x)


class ResidualGateFusion(nn.Module):
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

    def reset_parameters(self) -> None:
        pass

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(t)
        if self.identity_init:
            g = 2.0 * g - 1.0
        y = x + x * broadcast_channels(g.to(x.dtype), x)
        return torch.relu(y) if self.final_relu else y

    def extra_repr(self) -> str:
        return f"identity_init={self.identity_init}, final_relu={self.final_relu}"
