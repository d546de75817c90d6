"""Global Context block (Cao et al., GCNet, arXiv 1904.11492): the ``gc`` preset.

Configured as the official code (mmcv ``ContextBlock``); parameter counts equal the official
module's (research tables §16).

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from torch import nn

from ..helpers import rd_width
from ..parts.base import GlobalContextBlock, init_flags
from ..parts.context import AttnPool, AvgPool
from ..parts.fusion import AddFusion, ScaleAddFusion, ScaleFusion
from ..parts.transform import Mlp, StackedTransforms
from ..registry import register_block

__all__ = ["gc_block"]

_POOLINGS = ("att", "avg")
_FUSIONS = ("add", "mul")


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
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
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
        init: ``"paper"`` zero-inits the last FC of each branch (mmcv ``last_zero_init``): with
            ``'add'`` the block is an exact identity, with ``'mul'`` the gate is
            ``sigmoid(0) = 0.5``. ``"identity"`` also uses the gate ``2 * sigmoid``: an exact
            identity for every fusion. Default: ``"paper"``.
        zero_init_last, identity_init: legacy overrides of the two flags (``zero_init_last=False``
            leaves the last FCs randomly initialised).

    Parameter counts (r16): 8,753 / 33,889 / 133,313 / 528,769 for C = 256 / 512 / 1024 / 2048.
    """
    if pooling not in _POOLINGS:
        raise ValueError(f"gc: pooling must be one of {_POOLINGS}, got {pooling!r}")
    fusions = (fusion,) if isinstance(fusion, str) else tuple(fusion)
    if not fusions or any(f not in _FUSIONS for f in fusions) or len(set(fusions)) != len(fusions):
        raise ValueError(f"gc: fusion must be 'add', 'mul' or ('add', 'mul'), got {fusion!r}")
    zero_last, gate = init_flags(
        "gc", init, paper_zero_last=True, zero_init_last=zero_init_last, identity_init=identity_init
    )
    cr = rd_width(channels, rd_ratio, rd_channels, rd_divisor, what="gc")
    dd = {"device": device, "dtype": dtype}
    branch = partial(Mlp, channels, cr, norm_layer=nn.LayerNorm if norm else None, zero_init_last=zero_last, **dd)
    context = AttnPool(channels, **dd) if pooling == "att" else AvgPool()
    if len(fusions) == 2:
        transform = StackedTransforms(branch(), branch())  # [mul, add] as mmcv's forward order
        fuse = ScaleAddFusion(identity_init=gate)
    elif fusions[0] == "add":
        transform, fuse = branch(), AddFusion()
    else:
        transform, fuse = branch(), ScaleFusion(identity_init=gate)
    return GlobalContextBlock(channels, context=context, transform=transform, fusion=fuse, name="gc")
