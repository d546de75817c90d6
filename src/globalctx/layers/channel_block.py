"""A :class:`GlobalContextBlock` that also reports its no-weight-decay parameters.

Shape legend: ``N`` batch, ``C`` channels, ``*S`` 1..3 spatial dims.
"""

from __future__ import annotations

from torch import nn

from .framework import GlobalContextBlock

__all__ = ["ChannelContextBlock", "collect_no_weight_decay"]


class ChannelContextBlock(GlobalContextBlock):
    """:class:`GlobalContextBlock` plus :meth:`no_weight_decay` (GCT's beta, SRM's parameters).

    Same constructor, forward and ``Shape`` as :class:`GlobalContextBlock`.
    """

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this block, as in ``named_parameters()``) of parameters that the
        paper trains without weight decay. A trainer prefixes them with the block's module path.
        """
        names: set[str] = set()
        for part_name in ("context", "transform", "fusion"):
            part = getattr(self, part_name)
            fn = getattr(part, "no_weight_decay", None)
            if callable(fn):
                names.update(f"{part_name}.{n}" for n in fn())
        return names


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
