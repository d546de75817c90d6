"""One registry class for named constructors (blocks and models).

A registry maps a lowercase name to a plain function. Unknown names raise ``ValueError`` listing
the known ones; registering a name twice raises ``ValueError``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["Registry"]

F = TypeVar("F", bound=Callable)


class Registry(Generic[F]):
    """Named constructors of one kind (``"block"``, ``"model"``).

    Args:
        kind: the word used in error messages (``unknown block 'x'; known blocks: ...``).

    Example::

        >>> blocks = Registry("block")
        >>> @blocks.register("mine")
        ... def mine(channels, **options): ...
        >>> blocks.names()
        ['mine']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._fns: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator: register ``fn`` under ``name`` (stored lowercase; must be new)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        key = name.lower()

        def wrap(fn: F) -> F:
            if key in self._fns:
                raise ValueError(f"{self.kind} {key!r} is already registered")
            self._fns[key] = fn
            return fn

        return wrap

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted; ``pattern`` is an fnmatch filter (``"*resnet50*"``)."""
        names = sorted(self._fns)
        return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names

    def get(self, name: str) -> F:
        """The constructor registered under ``name``; unknown names raise ``ValueError``."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        try:
            return self._fns[name.lower()]
        except KeyError:
            known = ", ".join(self.names())
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}") from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fns

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._fns)
