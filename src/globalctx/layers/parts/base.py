"""The GCNet framework assembler and the part contract: context modeling -> transform -> fusion.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims, ``L = prod(S)``,
``L_k`` key positions, ``Q`` selected query positions.

**The part contract.** A *part* is any ``nn.Module`` placed in one of the three slots of a
:class:`GlobalContextBlock`:

- ``context``: ``[N, C, *S] -> [N, C]`` (or a richer context such as SRM's ``[N, C, 2]``),
- ``transform``: the context -> ``[N, C]`` (or ``[N, K, C]`` for stacked branches),
- ``fusion``: ``(x [N, C, *S], t) -> [N, C, *S]``.

A part may define, and the block then uses:

- ``reset_parameters()``: re-run the part's initialiser. A part without one (``nn.Sequential``,
  ``nn.Identity``, a plain ``nn.Linear`` inside a container) is handled by
  :func:`reset_part`: every sub-module that has ``reset_parameters`` is reset, so free
  compositions such as ``transform=nn.Sequential(nn.Linear(C, C), nn.Sigmoid())`` work with
  ``reset_parameters()``.
- ``no_weight_decay()``: names (relative to the part) of parameters trained without weight decay;
  the block prefixes them with the slot name.
- ``zero_init_last()``: re-apply the part's configured zeroing of its last layer (a no-op when
  the part was built without it). Backbone initialisers (timm's ``ResNet.init_weights``) call
  ``zero_init_last()`` on every module that has it, so a blanket re-init keeps the block's
  identity init. No part stores a plain attribute of that name.

:class:`Part` is an optional base class giving the parameter-free defaults of all three.
Errors of a block name the block as built (``"eca: expected 64 channels ..."``): pass
``name=`` to :class:`GlobalContextBlock`.

**Attention maps.** The analysis reads two kinds of maps: :class:`PairwiseAttentionMap`
(NL, DNL: one map per query) and the shared map of a :class:`GlobalContextBlock` whose context
has an ``attention(x) -> [N, L]`` method (:class:`SharedAttentionMap`, e.g. ``AttnPool``).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from ..helpers import check_input

__all__ = [
    "INIT_CHOICES",
    "GlobalContextBlock",
    "PairwiseAttentionMap",
    "Part",
    "SharedAttentionMap",
    "check_init",
    "collect_no_weight_decay",
    "init_flags",
    "reset_part",
]

#: values of the ``init`` option every registered block takes
INIT_CHOICES = ("paper", "identity")


def check_init(name: str, init: str) -> bool:
    """Validate a block's ``init`` option; ``True`` for ``"identity"``.

    ``"paper"``: the official initialisation. ``"identity"``: the block is an exact identity at
    insertion (``y == x`` bit for bit, in eval and train mode).
    """
    if init not in INIT_CHOICES:
        raise ValueError(f"{name}: init must be one of {INIT_CHOICES}, got {init!r}")
    return init == "identity"


def init_flags(
    name: str,
    init: str,
    *,
    paper_zero_last: bool,
    zero_init_last: bool | None = None,
    identity_init: bool | None = None,
) -> tuple[bool, bool]:
    """Map a preset's ``init`` onto its parts: ``(zero_last, identity_gate)``.

    ``"paper"``: ``(paper_zero_last, False)``, the official init; ``"identity"``: ``(True, True)``,
    the last transform layer zeroed and the fusion's identity gate (see
    :mod:`~globalctx.layers.parts.fusion`). The legacy keywords ``zero_init_last`` /
    ``identity_init`` of the presets, when given, override the corresponding flag.
    """
    identity = check_init(name, init)
    zero_last = True if identity else paper_zero_last
    gate = identity
    if zero_init_last is not None:
        zero_last = bool(zero_init_last)
    if identity_init is not None:
        gate = bool(identity_init)
    return zero_last, gate


class Part(nn.Module):
    """Optional base class of a part: parameter-free defaults of the part contract."""

    def reset_parameters(self) -> None:
        """Re-run the initialiser (nothing to do for a parameter-free part)."""

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay (none by default)."""
        return set()


def reset_part(part: nn.Module) -> None:
    """``part.reset_parameters()``, or for a part without one (a container) every direct or
    nested sub-module that has it (each module reset once, outermost first)."""
    fn = getattr(part, "reset_parameters", None)
    if callable(fn):
        fn()
        return
    for child in part.children():
        reset_part(child)


@runtime_checkable
class PairwiseAttentionMap(Protocol):
    """A block with one attention map per query position (NL, DNL)."""

    def attention_rows(self, x: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """``[N, Q, L_k]`` weights of the flat query positions ``queries [Q]``."""

    def key_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """Spatial shape ``S_k`` of the key positions for input ``x``."""


@runtime_checkable
class SharedAttentionMap(Protocol):
    """A context part with one query-independent map (``AttnPool``)."""

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, L]`` pooling weights (sum to 1 over ``L``)."""


class GlobalContextBlock(nn.Module):
    """A global-context block built from three parts (Cao et al., GCNet, arXiv 1904.11492 §3.2).

    ``y = fusion(x, transform(context(x)))``. SE, simplified NL, GC and the channel-attention
    family are all instances; see :func:`globalctx.create_block` for the named presets and the
    module docstring for the part contract.

    Args:
        channels: ``C``, checked against the input.
        context: ``[N, C, *S] -> [N, C]`` module (e.g. :class:`~globalctx.layers.AttnPool`).
        transform: ``[N, C] -> [N, C]`` module (e.g. :class:`~globalctx.layers.Mlp`).
        fusion: ``(x, t) -> [N, C, *S]`` module (e.g. :class:`~globalctx.layers.AddFusion`).
        name: the name used in error messages (the preset's name). Default: the class name.

    Shape:
        - Input: ``[N, C, *S]`` with 1, 2 or 3 spatial dims
        - Output: same as input

    Example::

        >>> from globalctx.layers import GlobalContextBlock, AvgPool, Mlp, AddFusion
        >>> blk = GlobalContextBlock(256, context=AvgPool(), transform=Mlp(256, 16,
        ...     norm_layer=nn.LayerNorm), fusion=AddFusion())
        >>> blk(torch.randn(2, 256, 14, 14)).shape
        torch.Size([2, 256, 14, 14])
    """

    def __init__(
        self,
        channels: int,
        *,
        context: nn.Module,
        transform: nn.Module,
        fusion: nn.Module,
        name: str | None = None,
    ):
        super().__init__()
        self.channels = channels
        self.name = name or type(self).__name__
        self.context = context
        self.transform = transform
        self.fusion = fusion

    def reset_parameters(self) -> None:
        """Re-run every part's initialiser (the paper init, zero-init of the last layer included);
        parts without ``reset_parameters`` are handled by :func:`reset_part`."""
        for part in (self.context, self.transform, self.fusion):
            reset_part(part)

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this block, as in ``named_parameters()``) of parameters that the
        paper trains without weight decay (GCT's beta, SRM's parameters). A trainer prefixes them
        with the block's module path.
        """
        names: set[str] = set()
        for part_name in ("context", "transform", "fusion"):
            fn = getattr(getattr(self, part_name), "no_weight_decay", None)
            if callable(fn):
                names.update(f"{part_name}.{n}" for n in fn())
        return names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.channels, self.name)
        return self.fusion(x, self.transform(self.context(x)))

    def extra_repr(self) -> str:
        return f"{self.channels}"


def collect_no_weight_decay(model: nn.Module) -> set[str]:
    """Full parameter names (as ``model.named_parameters()``) of every sub-module's
    ``no_weight_decay()`` set, for building optimiser parameter groups.

    Example::

        >>> nwd = collect_no_weight_decay(model)
        >>> groups = [{"params": [p for n, p in model.named_parameters() if n not in nwd]},
        ...           {"params": [p for n, p in model.named_parameters() if n in nwd], "weight_decay": 0.0}]
    """
    names: set[str] = set()
    for path, module in model.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn):
            prefix = f"{path}." if path else ""
            names.update(prefix + n for n in fn())
    return names
