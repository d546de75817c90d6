"""``globalctx eval``: top-1 accuracy and loss of a trained checkpoint on a validation set.

Examples::

    globalctx eval runs/gc/best.safetensors --data fashion-mnist
    globalctx eval runs/gc                       # the run's best weights on the run's data
"""

from __future__ import annotations

import argparse
import json

from ..train.evaluation import evaluate_checkpoint
from .flags import add_batch_size, add_device, add_trust_model_code, positive_int
from .needs import require_for_run


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
    p.add_argument("--subset", type=positive_int, help="evaluate on a fixed class-balanced subset of N images")
    add_batch_size(p, default=256, help="evaluation batch (default: 256)")
    add_device(p, default="auto")
    add_trust_model_code(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    require_for_run("evaluation", data=args.data)
    res = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_dir=args.data_dir,
        subset=args.subset,
        batch_size=args.batch_size,
        device=args.device,
        trust_model_code=args.trust_model_code,
    )
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['checkpoint']}: top-1 {res['val_acc']:.4f}  loss {res['val_loss']:.4f}  "
            f"({res['val_n']} images of {res['data']})"
        )
    return 0


__all__ = ["add_parser", "run"]
