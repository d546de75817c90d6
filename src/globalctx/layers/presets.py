"""Named presets of the GCNet framework: ``se``, ``snl``, ``gc``.

Each preset configures the context / transform / fusion parts exactly as the paper's official
code; parameter counts equal the official modules' (research tables §16).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from .context import AttnPool, AvgPool
from .framework import GlobalContextBlock
from .fusion import AddFusion, ScaleAddFusion, ScaleFusion
from .helpers import rd_width
from .registry import register_block
from .transform import Bottleneck, LinearTransform, StackedTransforms

__all__ = ["se_block", "snl_block", "gc_block"]

_POOLINGS = ("att", "avg")
_FUSIONS = ("add", "mul")


@register_block("se")
def se_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    bias: bool = True,
    act_layer=nn.ReLU,
    zero_init_last: bool = False,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Squeeze-and-Excitation (Hu et al., CVPR 2018, arXiv 1709.01507).

    ``y = x * sigmoid(W_2 ReLU(W_1 GAP(x)))`` with ``W_1: C -> C // r``, ``W_2: C // r -> C``.
    Default ``r = 16`` with FC biases (the torchvision/timm form; 8,464 parameters at C=256).

    At init the paper's block is not an identity: with default init the gate is about 0.5
    everywhere. ``zero_init_last=True`` makes it exactly ``0.5 * x``; add
    ``identity_init=True`` (gate ``2 * sigmoid``) for an exact identity at insertion.
    """
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="se")
    return GlobalContextBlock(
        channels,
        context=AvgPool(),
        transform=Bottleneck(
            channels, cr, act_layer=act_layer, bias=bias, zero_init_last=zero_init_last, device=device, dtype=dtype
        ),
        fusion=ScaleFusion(identity_init=identity_init),
    )


@register_block("snl")
def snl_block(channels: int, *, zero_init_last: bool = True, device=None, dtype=None) -> GlobalContextBlock:
    """Simplified Non-local block (Cao et al., GCNet §3.1, arXiv 1904.11492).

    ``z_i = x_i + W_v sum_j softmax_j(W_k x_j) x_j``: one query-independent attention map
    (``W_k``: 1x1 ``C -> 1`` with bias), one linear ``W_v: C -> C`` with bias, add fusion.
    ``W_v`` is zero-initialised so the block is an exact identity at insertion.
    1,050,625 parameters at C=1024.
    """
    return GlobalContextBlock(
        channels,
        context=AttnPool(channels, device=device, dtype=dtype),
        transform=LinearTransform(channels, zero_init_last=zero_init_last, device=device, dtype=dtype),
        fusion=AddFusion(),
    )


@register_block("gc")
def gc_block(
    channels: int,
    *,
    rd_ratio: float = 1 / 16,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    pooling: str = "att",
    fusion: str | Sequence[str] = "add",
    norm: bool = True,
    zero_init_last: bool = True,
    identity_init: bool = False,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Global Context block (Cao et al., GCNet, arXiv 1904.11492), as mmcv's ``ContextBlock``.

    ``z_i = x_i + W_v2 ReLU(LN(W_v1 sum_j softmax_j(W_k x_j) x_j))`` for ``fusion='add'``.
    ``C_r = int(C * rd_ratio)`` (official rounding), LayerNorm over ``C_r``, the last FC of each
    branch zero-initialised (weight and bias).

    Args:
        pooling: ``'att'`` (softmax attention pooling) or ``'avg'``. Default: ``'att'``.
        fusion: ``'add'``, ``'mul'`` or both (``('add', 'mul')``, applied as mmcv:
            ``x * sigmoid(t_mul) + t_add``). Default: ``'add'``.
        norm: LayerNorm in the bottleneck. Default: ``True``.
        zero_init_last: zero-init the last FC of each branch. Default: ``True``. With
            ``'add'`` the block is then an exact identity; with ``'mul'`` the gate is
            ``sigmoid(0) = 0.5`` (as mmcv) unless ``identity_init=True`` (gate ``2 * sigmoid``).

    Parameter counts (r16): 8,753 / 33,889 / 133,313 / 528,769 for C = 256 / 512 / 1024 / 2048.
    """
    if pooling not in _POOLINGS:
        raise ValueError(f"gc: pooling must be one of {_POOLINGS}, got {pooling!r}")
    fusions = (fusion,) if isinstance(fusion, str) else tuple(fusion)
    if not fusions or any(f not in _FUSIONS for f in fusions) or len(set(fusions)) != len(fusions):
        raise ValueError(f"gc: fusion must be 'add', 'mul' or ('add', 'mul'), got {fusion!r}")
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="gc")
    dd = {"device": device, "dtype": dtype}
    branch = partial(
        Bottleneck, channels, cr, norm_layer=nn.LayerNorm if norm else None, zero_init_last=zero_init_last, **dd
    )
    context = AttnPool(channels, **dd) if pooling == "att" else AvgPool()
    if len(fusions) == 2:
        transform = StackedTransforms(branch(), branch())  # [mul, add] as mmcv's forward order
        fuse = ScaleAddFusion(identity_init=identity_init)
    elif fusions[0] == "add":
        transform, fuse = branch(), AddFusion()
    else:
        transform, fuse = branch(), ScaleFusion(identity_init=identity_init)
    return GlobalContextBlock(channels, context=context, transform=transform, fusion=fuse)
