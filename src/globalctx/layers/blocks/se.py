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

__all__ = ["se_block", "squeeze_excitation"]


def squeeze_excitation(
    name: str,
    channels: int,
    *,
    context: nn.Module,
    rd_ratio: float | None,
    rd_channels: int | None,
    rd_divisor: int,
    bias: bool,
    init: str,
    zero_init_last: bool | None,
    identity_init: bool | None,
    act_layer=nn.ReLU,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """The SE shape shared by ``se``, ``rcan``, ``soca`` and ``fca``: ``x * sigmoid(Mlp(context(x)))``.

    ``init`` maps as :func:`se_block` documents: ``"paper"`` keeps PyTorch's default init,
    ``"identity"`` zeroes the last FC and uses the gate ``2 * sigmoid``.
    """
    zero_last, gate = init_flags(
        name, init, paper_zero_last=False, zero_init_last=zero_init_last, identity_init=identity_init
    )
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what=name)
    return GlobalContextBlock(
        channels,
        context=context,
        transform=Mlp(
            channels, cr, act_layer=act_layer, bias=bias, zero_init_last=zero_last, device=device, dtype=dtype
        ),
        fusion=ScaleFusion(identity_init=gate),
        name=name,
    )


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
    return squeeze_excitation(
        "se",
        channels,
        context=AvgPool(),
        rd_ratio=rd_ratio,
        rd_channels=rd_channels,
        rd_divisor=rd_divisor,
        bias=bias,
        act_layer=act_layer,
        init=init,
        zero_init_last=zero_init_last,
        identity_init=identity_init,
        device=device,
        dtype=dtype,
    )
