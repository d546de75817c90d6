"""RCAN channel attention (Zhang et al., ECCV 2018, arXiv 1807.02758): the ``rcan`` preset.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

from ..parts.base import GlobalContextBlock
from ..parts.context import AvgPool
from ..registry import register_block
from .se import squeeze_excitation

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
    return squeeze_excitation(
        "rcan",
        channels,
        context=AvgPool(),
        rd_ratio=rd_ratio,
        rd_channels=rd_channels,
        rd_divisor=rd_divisor,
        bias=True,
        init=init,
        zero_init_last=zero_init_last,
        identity_init=identity_init,
        device=device,
        dtype=dtype,
    )
