"""Gated Channel Transformation (Yang et al., CVPR 2020, arXiv 1909.11519): the ``gct`` preset,
its norm embedding and its channel normalisation.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..helpers import check_eps
from ..parts.base import GlobalContextBlock, Part, check_init
from ..parts.fusion import TanhGateFusion
from ..registry import register_block

__all__ = ["GCTTransform", "GCT_MODES", "NormEmbed", "gct_block"]

#: the embedding norms of GCT
GCT_MODES = ("l2", "l1")


class NormEmbed(Part):
    """GCT's global embedding: the per-channel L2 or L1 norm over positions.

    ``'l2'``: ``s_c = sqrt(sum_L x^2 + eps)``; ``'l1'``: ``s_c = sum_L |x|`` (``sum_L x`` with
    ``after_relu=True``, as the official code). Sums, not means, as the official code.

    Args:
        mode: ``'l2'`` or ``'l1'``. Default: ``'l2'``.
        eps: must be ``> 0``. Default: ``1e-5``.
        after_relu: input is known non-negative (skip ``abs`` in L1). Default: ``False``.

    Shape:
        - Input: ``[N, C, *S]``
        - Output: ``[N, C]``
    """

    def __init__(self, *, mode: str = "l2", eps: float = 1e-5, after_relu: bool = False):
        super().__init__()
        if mode not in GCT_MODES:
            raise ValueError(f"gct: mode must be one of {GCT_MODES}, got {mode!r}")
        self.mode = mode
        self.eps = check_eps("gct", eps)
        self.after_relu = after_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(2)  # [N, C, L]
        # one streaming pass each (no x^2 or |x| temporary)
        if self.mode == "l2":
            return (torch.linalg.vector_norm(x, 2, dim=-1).square() + self.eps).sqrt()  # [N, C]
        if self.after_relu:
            return x.sum(-1)  # [N, C]
        return torch.linalg.vector_norm(x, 1, dim=-1)  # [N, C]

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, eps={self.eps:g}"


class GCTTransform(Part):
    """GCT's channel normalisation (Yang et al., CVPR 2020, arXiv 1909.11519).

    ``e = alpha * s``; ``'l2'``: ``t = gamma * e / sqrt(mean_C(e^2) + eps) + beta``;
    ``'l1'``: ``t = gamma * e / (mean_C(|e|) + eps) + beta``. ``alpha = 1``, ``gamma = beta = 0``
    at init, so ``t = 0`` and the ``1 + tanh`` gate is exactly 1. ``3 C`` parameters.

    Args:
        channels: ``C``.
        mode: ``'l2'`` or ``'l1'``. Default: ``'l2'``.
        eps: must be ``> 0`` (``0`` gives ``0/0`` for a zero embedding). Default: ``1e-5``.

    Shape:
        - Input: ``[N, C]`` (the norm embedding ``s``)
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, *, mode: str = "l2", eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        if mode not in GCT_MODES:
            raise ValueError(f"gct: mode must be one of {GCT_MODES}, got {mode!r}")
        dd = {"device": device, "dtype": dtype}
        self.channels = channels
        self.mode = mode
        self.eps = check_eps("gct", eps)
        self.alpha = nn.Parameter(torch.empty(channels, **dd))
        self.gamma = nn.Parameter(torch.empty(channels, **dd))
        self.beta = nn.Parameter(torch.empty(channels, **dd))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.alpha)
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def no_weight_decay(self) -> set[str]:
        """``beta`` (the paper's setting: no weight decay on beta)."""
        return {"beta"}

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        e = s * self.alpha  # [N, C]
        if self.mode == "l2":
            norm = self.gamma / (e.pow(2).mean(dim=1, keepdim=True) + self.eps).sqrt()
        else:
            norm = self.gamma / (e.abs().mean(dim=1, keepdim=True) + self.eps)
        return e * norm + self.beta

    def extra_repr(self) -> str:
        return f"{self.channels}, mode={self.mode!r}, eps={self.eps:g}"


@register_block("gct")
def gct_block(
    channels: int,
    *,
    mode: str = "l2",
    eps: float = 1e-5,
    after_relu: bool = False,
    init: str = "paper",
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Gated Channel Transformation (Yang et al., CVPR 2020, arXiv 1909.11519).

    ``s = ||x_c||_2`` (or L1), ``e = alpha s``, ``t = gamma e / sqrt(mean_C e^2 + eps) + beta``,
    ``y = x (1 + tanh(t))``. ``3 C`` parameters (768 at C=256). ``no_weight_decay()`` returns
    ``{'transform.beta'}`` (paper setting). An unknown ``mode`` or ``eps <= 0`` raises ``ValueError``.

    ``init``: ``"paper"`` and ``"identity"`` are the same (``gamma = beta = 0``): gate exactly 1,
    the block is the identity.
    """
    check_init("gct", init)
    return GlobalContextBlock(
        channels,
        context=NormEmbed(mode=mode, eps=eps, after_relu=after_relu),
        transform=GCTTransform(channels, mode=mode, eps=eps, device=device, dtype=dtype),
        fusion=TanhGateFusion(),
        name="gct",
    )
