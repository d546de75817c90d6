"""``globalctx eval``: top-1 accuracy and loss of a trained checkpoint on a validation set.

Examples::

    globalctx eval runs/gc/best.safetensors --data fashion-mnist
    globalctx eval runs/gc                       # the run's best weights on the run's data
"""

from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (run dir or .safetensors) on a validation set",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="run directory or .safetensors file written by globalctx train")
    p.add_argument("--data", help="fashion-mnist or imagefolder:TRAIN_DIR,VAL_DIR (default: the run's data)")
    p.add_argument("--data-dir", help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--subset", type=int, help="evaluate on a fixed subset of N images")
    p.add_argument("-b", "--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
    return p


def evaluate_checkpoint(
    path, *, data: str | None = None, data_dir=None, subset=None, batch_size: int = 256, device="cpu"
) -> dict:
    """Load ``path`` with :func:`checkpoint.load_model` and evaluate it on the validation split."""
    import torch

    from .checkpoint import CheckpointError, load_model
    from .data import BatchLoader, DataError, augment_for, build_datasets
    from .loop import evaluate

    model, config = load_model(path, device=device)
    tc, dc = config.get("train", {}), config.get("data", {})
    spec = data or dc.get("spec") or tc.get("data", "fashion-mnist")
    shape = dc.get("image_shape")
    _, val = build_datasets(
        spec,
        data_dir=data_dir or tc.get("data_dir"),
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
    res = evaluate(model, loader, torch.device(device))
    return {"checkpoint": str(path), "data": spec, "model": config["model"]["name"], **res}


def run(args: argparse.Namespace) -> int:
    from .cli import _error_types

    try:
        res = evaluate_checkpoint(
            args.checkpoint,
            data=args.data,
            data_dir=args.data_dir,
            subset=args.subset,
            batch_size=args.batch_size,
            device=args.device,
        )
    except _error_types() as e:
        print(f"globalctx eval: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['checkpoint']}: top-1 {res['val_acc']:.4f}  loss {res['val_loss']:.4f}  "
            f"({res['val_n']} images of {res['data']})"
        )
    return 0


__all__ = ["add_parser", "run", "evaluate_checkpoint"]
