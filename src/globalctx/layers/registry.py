"""Block registry: plain functions ``fn(channels, **options) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["register_block", "create_block", "list_blocks", "get_block"]

_BLOCKS: dict[str, Callable[..., nn.Module]] = {}


def register_block(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` under ``name`` (lowercase, unique)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BLOCKS:
            raise ValueError(f"block {name!r} is already registered")
        _BLOCKS[name] = fn
        return fn

    return wrap


def list_blocks() -> list[str]:
    """Names of all registered blocks, sorted."""
    return sorted(_BLOCKS)


def get_block(name: str) -> Callable[..., nn.Module]:
    """The registered constructor for ``name``; unknown names raise ``ValueError``."""
    try:
        return _BLOCKS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; known blocks: {', '.join(list_blocks())}") from None


def create_block(name: str | Callable[..., nn.Module] | None, channels: int, **options) -> nn.Module | None:
    """Build a block for ``channels`` input channels.

    Args:
        name: a registered name (see :func:`list_blocks`), a class or callable taking
            ``(channels, **options)``, or ``None`` / ``""`` for no block (returns ``None``).
        channels: number of input (= output) channels.
        **options: the preset's keyword options; a misspelled one raises ``TypeError``.

    Example::

        >>> import globalctx
        >>> gc = globalctx.create_block("gc", 256)
    """
    if name is None or name == "":
        return None
    fn = get_block(name) if isinstance(name, str) else name
    return fn(channels, **options)
