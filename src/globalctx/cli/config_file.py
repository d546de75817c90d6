"""``-c/--config run.toml``: training settings from a TOML file; flags given on the command line
override them, and the file overrides the defaults (or, with ``--resume``, the run's own values).

The keys are :class:`~globalctx.train.TrainConfig` fields, written with ``_`` or ``-``
(``batch_size`` or ``batch-size``); ``model_kwargs`` is a table::

    model = "resnet18_small"
    attn = "gc"
    epochs = 4
    batch-size = 64
    lr = 0.05
    [model_kwargs]
    base_width = 16
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..train.config import TrainConfig

__all__ = ["read_config_file"]


def _kind(annotation: str) -> tuple[type, ...]:
    """The TOML value types a field of this annotation takes."""
    if annotation.startswith("bool"):
        return (bool,)
    if annotation.startswith("dict"):
        return (dict,)
    if annotation.startswith("tuple"):
        return (list,)
    if annotation.startswith("float"):
        return (int, float)
    if annotation.startswith("int"):
        return (int,)
    return (str,)


def read_config_file(path) -> dict[str, Any]:
    """The settings of a TOML file, checked against the TrainConfig fields and their types.

    Raises:
        ValueError: the file is missing, not TOML, or has an unknown key or a value of the wrong
            type (the message names the key and what it takes).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise ValueError("--config needs Python 3.11 or later (tomllib)") from None
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--config {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"--config {path} is not valid TOML ({e})") from None
    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for raw, value in data.items():
        key = raw.replace("-", "_")
        if key not in fields:
            raise ValueError(f"--config {path}: unknown key {raw!r}; valid keys: {', '.join(sorted(fields))}")
        kinds = _kind(fields[key])
        if not isinstance(value, kinds) or (bool not in kinds and isinstance(value, bool)):
            want = " or ".join(k.__name__ for k in kinds).replace("list", "array").replace("dict", "table")
            raise ValueError(f"--config {path}: {raw} = {value!r} must be a {want}")
        out[key] = tuple(value) if isinstance(value, list) else value
    return out
