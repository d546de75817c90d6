"""The GCNet framework assembler: context modeling -> transform -> fusion.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

import torch
from torch import nn

from .helpers import check_input

__all__ = ["GlobalContextBlock"]


class GlobalContextBlock(nn.Module):
    """A global-context block built from three parts (Cao et al., GCNet, arXiv 1904.11492 §3.2).

    ``y = fusion(x, transform(context(x)))``. SE, simplified NL, GC and the channel-attention
    family are all instances; see :func:`globalctx.create_block` for the named presets.

    Args:
        channels: ``C``, checked against the input.
        context: ``[N, C, *S] -> [N, C]`` module (e.g. :class:`~globalctx.layers.AttnPool`).
        transform: ``[N, C] -> [N, C]`` module (e.g. :class:`~globalctx.layers.Bottleneck`).
        fusion: ``(x, t) -> [N, C, *S]`` module (e.g. :class:`~globalctx.layers.AddFusion`).

    Shape:
        - Input: ``[N, C, *S]`` with 1, 2 or 3 spatial dims
        - Output: same as input

    Example::

        >>> from globalctx.layers import GlobalContextBlock, AvgPool, Bottleneck, AddFusion
        >>> blk = GlobalContextBlock(256, context=AvgPool(), transform=Bottleneck(256, 16,
        ...     norm_layer=nn.LayerNorm), fusion=AddFusion())
        >>> blk(torch.randn(2, 256, 14, 14)).shape
        torch.Size([2, 256, 14, 14])
    """

    def __init__(self, channels: int, *, context: nn.Module, transform: nn.Module, fusion: nn.Module):
        super().__init__()
        self.channels = channels
        self.context = context
        self.transform = transform
        self.fusion = fusion

    def reset_parameters(self) -> None:
        """Re-run every part's initialiser (the paper init, zero-init of the last layer included)."""
        for part in (self.context, self.transform, self.fusion):
            part.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, "GlobalContextBlock")
        return self.fusion(x, self.transform(self.context(x)))

    def extra_repr(self) -> str:
        return f"{self.channels}"
