"""Start a run from existing weights (``--initial-checkpoint FILE``): a torchvision, timm, mmcv or
globalctx state dict, loaded through :mod:`globalctx.convert` with every unmatched key reported.

Files from other people are data: a ``.safetensors`` file is read with safetensors, anything else
with ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors and plain
containers; nothing named inside a file is imported or called.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError

__all__ = ["LAYOUTS", "read_state_dict", "detect_layout", "load_initial", "describe"]

LAYOUTS = ("auto", "globalctx", "torchvision", "timm", "mmcv")
# containers that checkpoints of timm's train.py, mmengine and torchvision's references use
_CONTAINER_KEYS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "backbone.", "_orig_mod.")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of ``path`` (``.safetensors``, or a ``.pt``/``.pth``/``.bin`` read with
    ``weights_only=True``), unwrapped from a ``{"state_dict": ...}`` / ``{"model": ...}``
    container and stripped of a ``module.`` / ``backbone.`` / ``_orig_mod.`` prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"--initial-checkpoint {path} does not exist (give a .safetensors or .pt file)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                sd = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors has its own error types for bad headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses any pickled object but tensors and containers
            raise CheckpointError(
                f"{path} is not a weights-only checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                "save it as a state dict or convert it to .safetensors"
            ) from None
    for key in _CONTAINER_KEYS:
        if isinstance(sd, Mapping) and isinstance(sd.get(key), Mapping):
            sd = sd[key]
            break
    if not isinstance(sd, Mapping) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    sd = dict(sd)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def detect_layout(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """``'globalctx'`` when the file has our block slots (``layerX.Y.attn_*``, ``stem_attn``) or
    the model is not a ResNet; else the layout whose block attribute appears (``'timm'``:
    ``layerX.Y.se``, ``'mmcv'``: ``layerX.Y.context_block``); else ``'torchvision'``."""
    from ..models.resnet import ResNet

    keys = list(state_dict)
    if not isinstance(model, ResNet) or any(".attn_" in k or k.startswith("stem_attn") for k in keys):
        return "globalctx"
    if any(".se." in k for k in keys):
        return "timm"
    if any(".context_block." in k for k in keys):
        return "mmcv"
    return "torchvision"


def load_initial(model: nn.Module, path, *, layout: str = "auto") -> dict:
    """Load the weights of ``path`` into ``model`` wherever names and shapes match.

    Returns:
        ``{"layout", "loaded", "missing", "unexpected", "mismatched"}``: our keys loaded, our keys
        not in the file, the file's keys not used, and entries whose shapes differ (a classifier
        with another number of classes, typically). Nothing unmatched is loaded.

    Raises:
        CheckpointError: the file is missing, not a weights-only state dict, or shares no key
            with the model.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"initial checkpoint layout {layout!r} is not valid; choose one of {', '.join(LAYOUTS)}")
    sd = read_state_dict(path)
    layout = detect_layout(model, sd) if layout == "auto" else layout
    if layout == "globalctx":
        own = model.state_dict()
        ok = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        report = {
            "loaded": sorted(ok),
            "missing": sorted(k for k in own if k not in sd and not k.endswith("num_batches_tracked")),
            "unexpected": sorted(k for k in sd if k not in own),
            "mismatched": sorted(
                f"{k} {list(own[k].shape)} <- {list(v.shape)}"
                for k, v in sd.items()
                if k in own and own[k].shape != v.shape
            ),
        }
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in ok.items()}, strict=False)
    else:
        from ..convert import load_resnet

        report = load_resnet(model, sd, layout=layout, strict=False)
    if not report["loaded"]:
        raise CheckpointError(f"--initial-checkpoint {path}: no key matches this model ({layout} layout); wrong file?")
    return {"layout": layout, **report}


def describe(path, report: dict) -> str:
    """One line for the run's log: what was loaded and every unmatched key (first few named)."""

    def few(keys):
        return "[" + ", ".join(keys[:4]) + (f", +{len(keys) - 4} more" if len(keys) > 4 else "") + "]"

    parts = [f"initial weights {path} ({report['layout']} layout): loaded {len(report['loaded'])} tensors"]
    for what in ("missing", "unexpected", "mismatched"):
        if report[what]:
            parts.append(f"{what} {len(report[what])} {few(report[what])}")
    return "; ".join(parts)
