"""Small shared helpers: reduction widths, input checks, zero-init of a last layer.

Shape legend: ``N`` batch, ``C`` channels, ``C_r`` reduced channels, ``*S`` spatial dims
(1, 2 or 3 of them), ``L = prod(S)``.
"""

from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn

__all__ = [
    "make_divisible",
    "rd_width",
    "check_input",
    "zero_layer",
    "fp32_softmax_input",
    "wide_dtype",
    "autocast_device",
    "check_eps",
]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor`` (timm/MobileNet rule).

    The result is at least ``min_value`` (default ``divisor``) and is bumped up by one divisor if
    rounding would lose more than ``1 - round_limit`` of ``value``.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def rd_width(
    channels: int,
    rd_ratio: float | None = None,
    rd_channels: int | None = None,
    rd_divisor: int = 1,
    *,
    what: str = "block",
) -> int:
    """Resolve the reduced width ``C_r`` from the one reduction vocabulary.

    ``rd_channels`` wins when given. Otherwise ``C_r = int(channels * rd_ratio)`` (the official
    GCNet rounding, equal to SENet's ``C // r`` for ``rd_ratio = 1/r``); with ``rd_divisor > 1``
    the width is rounded to a multiple of it (:func:`make_divisible`, ``round_limit=0``).
    A width below 1 raises ``ValueError``: never a silent zero-width layer.
    """
    if channels < 1:
        raise ValueError(f"{what}: channels must be >= 1, got {channels}")
    if rd_channels is not None:
        width = int(rd_channels)
        source = f"rd_channels={rd_channels}"
    else:
        if rd_ratio is None:
            raise ValueError(f"{what}: give rd_ratio or rd_channels")
        if not (isinstance(rd_ratio, (int, float)) and math.isfinite(rd_ratio) and rd_ratio > 0):
            raise ValueError(f"{what}: rd_ratio must be a positive number, got {rd_ratio!r}")
        # the tiny epsilon keeps e.g. 48 * (1/3) = 15.999999 from flooring to 15
        raw = channels * rd_ratio
        width = int(raw + 1e-9 * max(1.0, raw))
        if rd_divisor > 1:
            width = make_divisible(raw, rd_divisor, round_limit=0.0)
        source = f"channels={channels} * rd_ratio={rd_ratio:g}"
    if width < 1:
        raise ValueError(
            f"{what}: reduced width {source} gives {width} < 1 channel; use a larger rd_ratio or pass rd_channels >= 1"
        )
    return width


def zero_layer(layer: nn.Module) -> None:
    """Zero ``layer.weight`` and ``layer.bias`` (when present): the identity-at-insertion init."""
    nn.init.zeros_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def fp32_softmax_input(logits: torch.Tensor) -> torch.Tensor:
    """``logits`` in fp32 when fp16/bf16 (softmax statistics without overflow), else unchanged."""
    if logits.dtype == torch.float16 or logits.dtype == torch.bfloat16:
        return logits.float()
    return logits


def wide_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype to compute overflow-prone quantities of ``t`` in: fp32 for fp16/bf16, else ``t.dtype``."""
    return torch.float32 if t.dtype == torch.float16 or t.dtype == torch.bfloat16 else t.dtype


def autocast_device(t: torch.Tensor) -> str:
    """``t``'s device type when autocast is enabled for it, else ``""``.

    ``""`` under ``torch.fx.symbolic_trace`` too (a ``Proxy`` has no device): a traced graph runs
    as without autocast. TorchScript has no such query: call it under
    ``if not torch.jit.is_scripting():``.
    """
    if isinstance(t, torch.fx.Proxy):
        return ""
    dev = t.device.type
    return dev if torch.is_autocast_enabled(dev) else ""


def check_eps(name: str, eps: float) -> float:
    """``eps`` as a float when it is a finite number ``> 0``; otherwise ``ValueError`` naming the block."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(
            f"{name}: eps must be a finite number > 0 (a constant input would give 0/0), got {eps!r}; use e.g. eps=1e-5"
        )
    return float(eps)


def check_input(x: torch.Tensor, channels: int, name: str, max_spatial: int = 3) -> None:
    """Raise ``ValueError`` naming expected and received shape when ``x`` is not ``[N, C, *S]``.

    Checks rank (1..``max_spatial`` spatial dims), channel count, a floating dtype and non-empty
    spatial dims. Shapes are static under tracing and compilation, so the checks cost nothing
    there. Under ``torch.fx.symbolic_trace`` the input is a ``Proxy`` without a shape: the check
    is skipped, so the traced graph has no check (TorchScript compiles the check as usual).
    """
    if not torch.jit.is_scripting():
        if isinstance(x, torch.fx.Proxy):  # symbolic tracing: no shape to check
            return
    if x.dim() < 3 or x.dim() > 2 + max_spatial:
        raise ValueError(
            f"{name}: expected input [N, {channels}, *S] with 1..{max_spatial} spatial dims, got shape {list(x.shape)}"
        )
    if x.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels (dim 1), got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point input, got dtype {x.dtype}")
    for s in x.shape[2:]:
        if s == 0:
            raise ValueError(f"{name}: spatial dims must be non-empty, got shape {list(x.shape)}")
