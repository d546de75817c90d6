"""Model registry: plain functions ``fn(*, num_classes, in_chans, attn, **kw) -> nn.Module``."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from torch import nn

__all__ = ["register_model", "create_model", "list_models", "get_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model constructor under ``name`` (lowercase, unique)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn

    return wrap


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered models, sorted; ``pattern`` is an fnmatch filter (``"*resnet50*"``)."""
    names = sorted(_MODELS)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_model(name: str) -> Callable[..., nn.Module]:
    """The registered constructor for ``name``; unknown names raise ``ValueError``."""
    try:
        return _MODELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3, attn=None, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models` (e.g. ``"resnet50"``, ``"gc_resnet50"``,
            ``"resnet18_small"``, ``"nl_c2d_resnet50"``).
        num_classes: classifier outputs; ``0`` gives a model without a head. Default: ``1000``.
        in_chans: input channels. Default: ``3``.
        attn: blocks to add on top of the model's own: a registered block name (placed at that
            block's paper-default position, see :func:`globalctx.models.default_placement`), a
            :class:`~globalctx.models.Placement`, a list of them, or ``None``. Default: ``None``.
        **kwargs: model options (e.g. ``base_width`` for the small-input variants); a misspelled
            option raises ``TypeError``.

    Example::

        >>> import globalctx
        >>> m = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn="gc", base_width=16)
    """
    return get_model(name)(num_classes=num_classes, in_chans=in_chans, attn=attn, **kwargs)
