"""``evaluate_checkpoint``: top-1 accuracy and loss of a trained checkpoint on a validation set."""

from __future__ import annotations

from pathlib import Path

from ..device import resolve_device
from .checkpoint import CheckpointError, load_model
from .data import BatchLoader, DataError, augment_for, build_datasets
from .loop import evaluate

__all__ = ["evaluate_checkpoint"]


def evaluate_checkpoint(
    path,
    *,
    data: str | None = None,
    data_dir=None,
    subset: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    trust_model_code: bool = False,
) -> dict:
    """Load ``path`` with :func:`~globalctx.train.checkpoint.load_model` (``trust_model_code`` as
    there) and evaluate it on the validation split (or a fixed subset of ``subset`` images).

    ``data_dir`` given is read or refused (see :func:`~globalctx.train.data.find_fashion_mnist`);
    without it, the run's own ``--data-dir`` is used when that directory exists here, else the
    default places."""
    if subset is not None and (not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive number of images or None, got {subset!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = resolve_device(device)
    model, config = load_model(path, device=dev, trust_model_code=trust_model_code)
    tc, dc = config.get("train", {}), config.get("data", {})
    spec = data or dc.get("spec") or tc.get("data", "fashion-mnist")
    shape = dc.get("image_shape")
    recorded = tc.get("data_dir")  # the run's own --data-dir: used when it is there on this machine
    if data_dir is None and recorded and Path(recorded).is_dir():
        data_dir = recorded
    _, val = build_datasets(
        spec,
        data_dir=data_dir,
        val_subset=subset,
        seed=tc.get("seed", 0),
        in_chans=shape[0] if shape else 3,
        image_size=tc.get("image_size"),
    )
    if shape and list(val.image_shape) != list(shape):
        raise DataError(f"{spec} images are {list(val.image_shape)} but {path} was trained on {shape}")
    if dc.get("classes") and list(val.classes) != list(dc["classes"]):
        raise CheckpointError(f"{spec} has classes {list(val.classes)[:5]}... but {path} was trained on other classes")
    loader = BatchLoader(val, augment_for(spec, val, train=False), global_batch=batch_size, train=False)
    res = evaluate(model, loader, dev)
    return {"checkpoint": str(path), "data": spec, "model": config["model"]["name"], **res}
