"""Checkpoints: weights in safetensors, training state as plain tensors/containers, written atomically.

A run directory holds

- ``config.json``: the model (registered name + constructor kwargs), the training config and the
  data description (classes, normalisation), enough for :func:`load_model` to rebuild the model;
- ``last.safetensors``: the latest weights (what ``eval``/``analyze`` read);
- ``last.state.pt``: everything a resume needs in one file (weights, optimizer, step, RNG,
  history, ...), written at the end of every epoch and on SIGINT/SIGTERM;
- ``best.safetensors``: the weights with the best validation accuracy so far.

A checkpoint is written ``last.safetensors``, then ``best.safetensors``, then ``last.state.pt``
last: the state file is the commit point. A run killed (or out of disk space) at any instant
resumes from the newest complete state file, which holds its own weights, whichever of the
other files was replaced before the kill. (State files written before the weights were kept in
them are resumed with ``last.safetensors``, after checking both are from the same step.)

Every ``.safetensors`` file also carries the config in its metadata (so a lone file can be
loaded) and a SHA-256 of its tensor bytes, checked on load. State files are read with
``torch.load(weights_only=True)``: nothing but tensors and plain containers is ever unpickled.
Every file is written to a temporary name in the same directory and moved into place with
``os.replace``, so a crash never leaves a half-written checkpoint under the real name.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "atomic_write",
    "save_weights",
    "load_weights",
    "load_tensors",
    "state_tensors",
    "tensor_digest",
    "read_weights",
    "save_state",
    "load_state",
    "write_config",
    "read_config",
    "build_model",
    "load_model",
    "names_model_code",
    "refuse_model_code",
    "CONFIG_NAME",
]

CONFIG_NAME = "config.json"
FORMAT = "globalctx-run/1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, tampered with or belongs to another architecture."""


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then ``os.replace(tmp_path, path)``; the temporary file is removed on error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None or str(e.filename) == str(tmp):
            e.filename = str(path)  # the error names the file being written, not its temporary copy
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # DDP
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save_weights(
    path, model: nn.Module, *, config: dict | None = None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Write ``model``'s state dict to ``path`` (safetensors), with config and digest in the metadata.

    Returns the metadata written (``sha256`` is the digest of the tensor bytes)."""
    from safetensors.torch import save_file

    tensors = _state_tensors(model)
    meta = {"format": FORMAT, "sha256": _tensor_digest(tensors)}
    if config is not None:
        meta["config"] = json.dumps(config)
    meta.update(extra or {})
    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=meta)
        except OSError:
            raise
        except Exception as e:  # safetensors reports I/O failures (a full disk) as its own error type
            raise OSError(f"cannot write {path}: {e}") from None

    atomic_write(path, write)
    return meta


def read_weights(path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with the digest verified."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    want = meta.get("sha256")
    if want is not None and _tensor_digest(tensors) != want:
        raise CheckpointError(f"{path} failed its integrity check (tensor bytes do not match the stored SHA-256)")
    return tensors, meta


def load_weights(model: nn.Module, path, *, strict: bool = True) -> dict[str, str]:
    """Load a safetensors file into ``model``; a different architecture raises ``CheckpointError``
    listing the missing, unexpected and shape-mismatched keys. Returns the file's metadata."""
    tensors, meta = read_weights(path)
    load_tensors(model, tensors, path, strict=strict)
    return meta


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s state dict (the plain module under DDP / ``torch.compile``)."""
    return _state_tensors(model)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``tensors`` (the ``sha256`` of the metadata)."""
    return _tensor_digest(tensors)


def load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], path, *, strict: bool = True) -> None:
    """Load ``tensors`` (read from ``path``) into ``model``, with the checks of :func:`load_weights`."""
    target = getattr(getattr(model, "module", model), "_orig_mod", getattr(model, "module", model))
    own = target.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if strict and (missing or unexpected or shapes):

        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(
                "shape mismatch: "
                + few([f"{k} {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}" for k in shapes])
            )
        raise CheckpointError(
            f"{path} does not fit this model ({'; '.join(parts)}); was it saved for another --model/--attn?"
        )
    target.load_state_dict(tensors, strict=strict)


def save_state(path, state: dict[str, Any]) -> Path:
    """Write a dict of tensors and plain containers (``torch.save``), atomically."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path) -> dict[str, Any]:
    """Read a state file with ``weights_only=True``; anything else raises ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training state {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a valid training state ({type(e).__name__}: {str(e)[:200]})") from None


def write_config(run_dir, config: dict) -> Path:
    run_dir = Path(run_dir)
    text = json.dumps(config, indent=2, sort_keys=True)
    return atomic_write(run_dir / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text + "\n"))


def read_config(run_dir) -> dict:
    p = Path(run_dir) / CONFIG_NAME
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{p} does not exist; is {run_dir} a run directory?") from None
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{p} is not valid JSON ({e})") from None
    if cfg.get("format") != FORMAT or "model" not in cfg:
        raise CheckpointError(f"{p} is not a globalctx run config (format {cfg.get('format')!r})")
    return cfg


def names_model_code(model: dict) -> bool:
    """Whether a model spec names an import path ``package.module:callable`` (code to import and
    call) instead of a registered model name."""
    return ":" in str(model.get("name", ""))


def refuse_model_code(model: dict, source, *, flag: str = "--trust-model-code") -> None:
    """Raise ``CheckpointError`` when ``model`` (read from the file ``source``) names code to run.

    Files name registered models only: opening a file never imports or calls anything named inside
    it. Loading such a file is a deliberate choice, made with ``flag`` on the command line or
    ``trust_model_code=True`` in Python."""
    if names_model_code(model):
        raise CheckpointError(
            f"{source} names its model as the import path {model['name']!r}; files are loaded with registered "
            f"models only and nothing named inside a file is imported or called. If you trust this file and "
            f"the code it names, load it deliberately with {flag} (Python: trust_model_code=True)"
        )


def build_model(model: dict) -> nn.Module:
    """Build ``{"name": ..., "kwargs": {...}}``: a registered model name (``create_model``), or an
    import path ``package.module:callable`` called with the kwargs.

    The import path is for specs the user wrote (command line, Python). A spec read from a file is
    checked with :func:`refuse_model_code` first (see :func:`load_model`)."""
    from ..models import create_model

    name, kwargs = model["name"], dict(model.get("kwargs", {}))
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"cannot import model {name!r}: {e}") from None
        return fn(**kwargs)
    return create_model(name, **kwargs)


def _pick_weights(run_dir: Path) -> Path:
    for name in ("best.safetensors", "last.safetensors"):
        if (run_dir / name).is_file():
            return run_dir / name
    raise CheckpointError(f"{run_dir} holds no best.safetensors or last.safetensors")


def load_model(
    path, *, device: str | torch.device = "cpu", trust_model_code: bool = False
) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a run directory (its ``best``, else ``last`` weights) or from a
    ``.safetensors`` file (config from the sibling ``config.json``, else from the file's metadata).

    Returns ``(model, config)`` with the model in eval mode; ``config`` is the run's config dict
    (``config["model"]`` = name + kwargs, ``config["train"]`` = training config,
    ``config["data"]`` = classes and normalisation).

    A file naming its model as an import path ``package.module:callable`` is refused with
    ``CheckpointError`` unless ``trust_model_code=True``: loading a file never imports or calls
    anything named inside it by default.

    Example::

        >>> model, cfg = load_model("runs/gc")            # doctest: +SKIP
        >>> model(torch.randn(1, 1, 28, 28)).shape        # doctest: +SKIP
        torch.Size([1, 10])
    """
    path = Path(path)
    if path.is_dir():
        config, weights = read_config(path), _pick_weights(path)
    elif path.suffix == ".safetensors":
        weights = path
        if (path.parent / CONFIG_NAME).is_file():
            config = read_config(path.parent)
        else:
            _, meta = read_weights(path)
            if "config" not in meta:
                raise CheckpointError(f"{path} has no config.json beside it and no config in its metadata")
            try:
                config = json.loads(meta["config"])
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{path}: the config in its metadata is not valid JSON ({e})") from None
    else:
        raise CheckpointError(f"{path} is neither a run directory nor a .safetensors file")
    model_spec = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model_spec, dict) or not isinstance(model_spec.get("name"), str):
        raise CheckpointError(f"{path}: its config has no model name")
    if not trust_model_code:
        refuse_model_code(config["model"], path)
    try:
        model = build_model(config["model"])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"cannot rebuild the model of {path}: {e}") from None
    load_weights(model, weights)
    return model.to(device).eval(), config
