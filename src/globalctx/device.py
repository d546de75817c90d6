"""``resolve_device``: one reading of a device name for every command and the trainer."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "DEVICE_CHOICES"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when CUDA is available, else ``cpu``; ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` as given. A bad name, or CUDA where there is none, raises ``ValueError`` naming
    the value and the valid choices."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    index = name[5:] if name.startswith("cuda:") else ""
    if name not in ("cpu", "cuda") and not index.isdigit():
        raise ValueError(f"device {name!r} is not valid; choose {DEVICE_CHOICES}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)
