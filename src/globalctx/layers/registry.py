"""Block registry: plain functions ``fn(channels, **options) -> nn.Module``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

__all__ = ["BLOCKS", "register_block", "create_block", "list_blocks", "get_block"]

#: every registered block constructor, by name
BLOCKS: Registry[Callable[..., nn.Module]] = Registry("block")


def register_block(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` under ``name`` (lowercase, unique)."""
    return BLOCKS.register(name)


def list_blocks() -> list[str]:
    """Names of all registered blocks, sorted."""
    return BLOCKS.names()


def get_block(name: str) -> Callable[..., nn.Module]:
    """The registered constructor for ``name``; unknown names raise ``ValueError``."""
    return BLOCKS.get(name)


def create_block(name: str | Callable[..., nn.Module] | None, channels: int, **options) -> nn.Module | None:
    """Build a block for ``channels`` input channels.

    Args:
        name: a registered name (see :func:`list_blocks`), a class or callable taking
            ``(channels, **options)``, or ``None`` / ``""`` for no block (returns ``None``).
        channels: number of input (= output) channels, a positive ``int``.
        **options: the preset's keyword options; a misspelled one raises ``TypeError``. Every
            registered block takes ``init="paper" | "identity"``.

    Example::

        >>> import globalctx
        >>> gc = globalctx.create_block("gc", 256)
    """
    if name is None or name == "":
        return None
    fn = get_block(name) if isinstance(name, str) else name
    label = name if isinstance(name, str) else getattr(name, "__name__", type(name).__name__)
    if isinstance(channels, bool) or not isinstance(channels, int):
        raise TypeError(f"{label}: channels must be an int, got {type(channels).__name__} {channels!r}")
    if channels < 1:
        raise ValueError(f"{label}: channels must be a positive int, got {channels}")
    return fn(channels, **options)
