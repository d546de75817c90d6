"""Efficient Channel Attention (Wang et al., CVPR 2020, arXiv 1910.03151): the ``eca`` preset,
its adaptive kernel size and its channel-conv transform.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..parts.base import GlobalContextBlock, Part, init_flags
from ..parts.context import AvgPool
from ..parts.fusion import ScaleFusion
from ..registry import register_block

__all__ = ["ChannelConv1d", "eca_block", "eca_kernel_size"]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0) -> int:
    """The paper's adaptive kernel size ``k = |log2(C) / gamma + beta / gamma|_odd`` (ECA-Net, Eq. 12).

    Computed here as ``t = int(abs((log2(C) + beta) / gamma))``, then ``t + 1`` if ``t`` is even.
    ``C = 64, 128, 256, 512, 1024, 2048`` give ``3, 5, 5, 5, 5, 7``. The official repository
    (BangguWu/ECANet) has no code for this rule: its models take one fixed ``k`` per stage from
    the caller, and the released ECA-Net50 was trained with ``k = 3, 5, 5, 7``.
    """
    if channels < 1:
        raise ValueError(f"eca: channels must be >= 1, got {channels}")
    if not gamma > 0:
        raise ValueError(f"eca: gamma must be > 0, got {gamma!r}")
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class ChannelConv1d(Part):
    """ECA's transform: one 1D conv of kernel ``k`` across the channel axis, no bias.

    ``t = conv1d(z)`` with ``z [N, C]`` seen as a 1-channel sequence of length ``C`` and zero
    padding ``(k - 1) // 2``: each channel interacts with its ``k`` neighbours. ``k`` parameters.

    Args:
        channels: ``C`` (shown in the repr).
        kernel_size: odd ``k``.
        zero_init_last: zero the kernel so ``t = 0`` at init (stored as ``zero_last``).
            Default: ``False`` (official: PyTorch's default conv init).

    Shape:
        - Input: ``[N, C]``
        - Output: ``[N, C]``
    """

    def __init__(self, channels: int, kernel_size: int, *, zero_init_last: bool = False, device=None, dtype=None):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"eca: kernel_size must be a positive odd integer, got {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.zero_last = zero_init_last
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False, device=device, dtype=dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.zero_last:
            nn.init.zeros_(self.conv.weight)
        else:
            self.conv.reset_parameters()

    def zero_init_last(self) -> None:
        """Zero the kernel when built with ``zero_init_last=True``."""
        if self.zero_last:
            nn.init.zeros_(self.conv.weight)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.conv(t.unsqueeze(1)).squeeze(1)  # [N, 1, C] -> [N, C]

    def extra_repr(self) -> str:
        return f"{self.channels}, kernel_size={self.kernel_size}"


@register_block("eca")
def eca_block(
    channels: int,
    *,
    kernel_size: int | None = None,
    gamma: float = 2.0,
    beta: float = 1.0,
    init: str = "paper",
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
    device=None,
    dtype=None,
) -> GlobalContextBlock:
    """Efficient Channel Attention (Wang et al., CVPR 2020, arXiv 1910.03151).

    ``y = x * sigmoid(conv1d_k(GAP(x)))``, a 1D conv across channels without bias (``k``
    parameters). ``kernel_size=None`` uses the paper's rule ``k = |log2(C)/gamma + beta/gamma|_odd``
    (:func:`eca_kernel_size`); the released ECA-Net50 instead used ``k = 3, 5, 5, 7`` for its four
    stages (pass ``kernel_size`` to reproduce it).

    ``init="paper"`` (official: default conv init): the gate is ``sigmoid`` of a random local
    average, about 0.5, not an identity. ``init="identity"``: zero kernel and gate
    ``2 * sigmoid``, exactly ``x``. ``zero_init_last`` / ``identity_init``: legacy overrides.
    """
    zero_last, gate = init_flags(
        "eca", init, paper_zero_last=False, zero_init_last=zero_init_last, identity_init=identity_init
    )
    k = eca_kernel_size(channels, gamma, beta) if kernel_size is None else kernel_size
    return GlobalContextBlock(
        channels,
        context=AvgPool(),
        transform=ChannelConv1d(channels, k, zero_init_last=zero_last, device=device, dtype=dtype),
        fusion=ScaleFusion(identity_init=gate),
        name="eca",
    )
