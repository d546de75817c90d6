"""Model registry: plain functions ``fn(*, num_classes, in_chans, attn, **kw) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

__all__ = ["register_model", "create_model", "list_models", "get_model"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register a model constructor under ``name`` (lowercase, unique)."""
    return MODELS.register(name)


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered models, sorted; ``pattern`` is an fnmatch filter (``"*resnet50*"``)."""
    return MODELS.names(pattern)


def get_model(name: str) -> Callable[..., nn.Module]:
    """The registered constructor for ``name``; unknown names raise ``ValueError``."""
    return MODELS.get(name)


# integer options of the model families, checked here so that a wrong type fails with their name
_COUNT_OPTIONS = ("base_width", "groups", "width_per_group", "last_stride")


def _check_count(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def create_model(name: str, *, num_classes: int = 1000, in_chans: int = 3, attn=None, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models` (e.g. ``"resnet50"``, ``"gc_resnet50"``,
            ``"resnet18_small"``, ``"nl_c2d_resnet50"``).
        num_classes: classifier outputs, an int >= 0; ``0`` gives a model without a head.
            Default: ``1000``.
        in_chans: input channels, an int >= 1. Default: ``3``.
        attn: blocks to add on top of the model's own: a registered block name (placed at that
            block's paper-default position, see :func:`globalctx.models.default_placement`), a
            :class:`~globalctx.models.Placement`, a list of them, or ``None``. Default: ``None``.
        **kwargs: model options (e.g. ``base_width`` for the small-input variants, ``device`` and
            ``dtype`` for every parameter, the blocks' included); a misspelled option raises
            ``TypeError``.

    A ``num_classes`` / ``in_chans`` (or a ``base_width``, ``groups``, ``width_per_group``,
    ``last_stride`` given) that is not an int raises ``TypeError``, one out of range ``ValueError``,
    both naming the argument.

    Example::

        >>> import globalctx
        >>> m = globalctx.create_model("resnet18_small", num_classes=10, in_chans=1, attn="gc", base_width=16)
        >>> m64 = globalctx.create_model("gc_resnet50", dtype=torch.float64)
    """
    fn = get_model(name)
    _check_count("num_classes", num_classes, 0)
    _check_count("in_chans", in_chans, 1)
    for key in _COUNT_OPTIONS:
        if key in kwargs:
            _check_count(key, kwargs[key], 1)
    return fn(num_classes=num_classes, in_chans=in_chans, attn=attn, **kwargs)
