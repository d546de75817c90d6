"""Squeeze-and-Excitation (Hu et al., CVPR 2018, arXiv 1709.01507): the ``se`` preset.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

from torch import nn

from ..helpers import rd_width
from ..parts.base import GlobalContextBlock, init_flags
from ..parts.context import AvgPool
from ..parts.fusion import ScaleFusion
from ..parts.transform import Mlp
from ..registry import register_block

__all__ = ["se_block"]


@register_block("se")
def se_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    bias: bool = True,
    act_layer=nn.ReLU,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, arXiv 1709.01507).

    ``y = x * sigmoid(W_2 ReLU(W_1 GAP(x)))`` with ``W_1: C -> C // r``, ``W_2: C // r -> C``.
    Default ``r = 16`` with FC biases (the torchvision/timm form; 8,464 parameters at C=256).

    ``init="paper"``: default PyTorch init, the gate is about 0.5 everywhere (not an identity).
    ``init="identity"``: ``W_2`` zeroed (weight and bias) and the gate ``2 * sigmoid``: ``y = x``.
    ``zero_init_last`` / ``identity_init``: legacy overrides of the two flags.
    """
    zero_last, gate = init_flags(
        "se", init, paper_zero_last=False, zero_init_last=zero_init_last, identity_init=identity_init
    )
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="se")
    return GlobalContextBlock(
        channels,
        context=AvgPool(),
        transform=Mlp(
            channels, cr, act_layer=act_layer, bias=bias, zero_init_last=zero_last, device=device, dtype=dtype
        ),
        fusion=ScaleFusion(identity_init=gate),
        name="se",
    )
