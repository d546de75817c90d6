"""RCAN channel attention (Zhang et al., ECCV 2018, arXiv 1807.02758): the ``rcan`` preset.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

from ..helpers import rd_width
from ..parts.base import GlobalContextBlock, init_flags
from ..parts.context import AvgPool
from ..parts.fusion import ScaleFusion
from ..parts.transform import Mlp
from ..registry import register_block

__all__ = ["rcan_block"]


@register_block("rcan")
def rcan_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """RCAN channel attention (Zhang et al., ECCV 2018, arXiv 1807.02758).

    ``y = x * sigmoid(W_2 ReLU(W_1 GAP(x) + b_1) + b_2)``, r = 16, biases (580 parameters at
    C=64): the SE structure, named as in super-resolution code.

    ``init="paper"``: gate about 0.5. ``init="identity"``: ``W_2`` zeroed and gate ``2 * sigmoid``,
    exactly ``x``. ``zero_init_last`` / ``identity_init``: legacy overrides.
    """
    zero_last, gate = init_flags(
        "rcan", init, paper_zero_last=False, zero_init_last=zero_init_last, identity_init=identity_init
    )
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="rcan")
    return GlobalContextBlock(
        channels,
        context=AvgPool(),
        transform=Mlp(channels, cr, bias=True, zero_init_last=zero_last, device=device, dtype=dtype),
        fusion=ScaleFusion(identity_init=gate),
        name="rcan",
    )
