"""Optional dependencies: check them before a command starts, name the extra that installs them.

The core package needs only torch and numpy. Training, plots, image datasets and the mmcv
adapter need more; each group is an extra of the package (``pip install 'globalctx[train]'``).
A command calls :func:`require` first, so a missing package stops it at once with one line
instead of a traceback half-way through a run::

    >>> from globalctx.extras import require
    >>> (tqdm,) = require("train", "tqdm", feature="globalctx train")   # doctest: +SKIP
    globalctx.extras.MissingExtraError: globalctx train needs tqdm, which is not installed:
    pip install 'globalctx[train]'

(one line in practice; wrapped here).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: The importable modules each extra of ``pyproject.toml`` provides (import names, not
#: distribution names: ``PIL`` for pillow, ``skimage`` for scikit-image).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("safetensors", "tqdm", "tensorboard", "matplotlib", "PIL"),
    "viz": ("matplotlib",),
    "images": ("skimage",),
    "mmcv": ("mmengine", "mmcv"),
    "timm": ("timm",),
}


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that installs it.

    Attributes:
        extra: the extra's name (``"train"``).
        missing: the import names that were not found, in the order asked.
    """

    def __init__(self, extra: str, missing: list[str], feature: str | None = None):
        self.extra = extra
        self.missing = list(missing)
        who = feature or f"the '{extra}' extra"
        what = ", ".join(self.missing)
        verb = "is" if len(self.missing) == 1 else "are"
        super().__init__(f"{who} needs {what}, which {verb} not installed: pip install 'globalctx[{extra}]'")


def _is_absent(err: ModuleNotFoundError, module: str) -> bool:
    """True when ``err`` says ``module`` itself (or a package above it) is not installed.

    A module that is installed but fails on a missing dependency of its own is a broken
    install, not a missing extra: that error is left to propagate unchanged.
    """
    return err.name is not None and (module == err.name or module.startswith(err.name + "."))


def require(extra: str, *modules: str, feature: str | None = None) -> tuple[ModuleType, ...]:
    """Import ``modules`` (default: all of ``extra``'s) or raise one :class:`MissingExtraError`.

    Args:
        extra: an extra of the package, one of :data:`EXTRAS`.
        *modules: import names to check (``"tqdm"``, ``"safetensors.torch"``); none means every
            module of ``extra``.
        feature: what needs them, for the message (``"globalctx train"``).

    Returns:
        The imported modules, in the order given.

    Raises:
        ValueError: ``extra`` is not one of :data:`EXTRAS`.
        MissingExtraError: one or more modules are not installed; the message lists all of them
            and the ``pip install 'globalctx[extra]'`` line.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; valid extras: {', '.join(sorted(EXTRAS))}")
    names = modules or EXTRAS[extra]
    found: list[ModuleType] = []
    missing: list[str] = []
    for name in names:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as e:
            if not _is_absent(e, name):
                raise
            missing.append(name)
    if missing:
        raise MissingExtraError(extra, missing, feature)
    return tuple(found)
