"""Simplified Non-local block (Cao et al., GCNet §3.1, arXiv 1904.11492): the ``snl`` preset.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``.
"""

from __future__ import annotations

from ..parts.base import GlobalContextBlock, init_flags
from ..parts.context import AttnPool
from ..parts.fusion import AddFusion
from ..parts.transform import LinearTransform
from ..registry import register_block

__all__ = ["snl_block"]


@register_block("snl")
def snl_block(
    channels: int,
    *,
    bias: bool = False,
    init: str = "paper",
    zero_init_last: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Simplified Non-local block (Cao et al., GCNet §3.1, arXiv 1904.11492).

    ``z_i = x_i + W_v sum_j softmax_j(W_k x_j) x_j``: one query-independent attention map
    (``W_k``: 1x1 ``C -> 1`` with bias), one linear ``W_v: C -> C``, add fusion. As the official
    SNL module (the ``simple=True`` ``ContextBlock`` of the authors' DNL detection code,
    ``conv_value = Conv2d(C, C, 1, bias=False)``), ``W_v`` has no bias by default:
    ``C^2 + C + 1`` parameters, 1,049,601 at C=1024 (65,793 at C=256).

    ``bias=True`` adds a bias to ``W_v`` (a learned constant added to every position; the
    library's default before it followed the official module): ``C^2 + 2 C + 1`` parameters,
    1,050,625 at C=1024 (66,049 at C=256).

    ``init``: ``"paper"`` and ``"identity"`` are the same: ``W_v`` is zero-initialised, so the
    block is an exact identity at insertion. ``zero_init_last=False`` (legacy) gives a random ``W_v``.
    """
    zero_last, _ = init_flags("snl", init, paper_zero_last=True, zero_init_last=zero_init_last)
    return GlobalContextBlock(
        channels,
        context=AttnPool(channels, device=device, dtype=dtype),
        transform=LinearTransform(channels, bias=bias, zero_init_last=zero_last, device=device, dtype=dtype),
        fusion=AddFusion(),
        name="snl",
    )
