"""``globalctx train``: train one model (single process, or one process per rank under torchrun).

Examples::

    globalctx train --model resnet18_small --attn gc --data fashion-mnist --epochs 10 --out runs/gc
    globalctx train --data imagefolder:/data/train,/data/val --model gc_resnet50 --amp bf16 --channels-last
    torchrun --nproc_per_node=2 -m globalctx train --model resnet18_small --attn gc --out runs/gc-ddp
    globalctx train --resume runs/gc              # continue exactly where it stopped
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..device import resolve_device
from ..train import checkpoint as ckpt
from ..train.config import TrainConfig
from ..train.data import DataError, download_fashion_mnist, find_fashion_mnist, parse_data_spec
from ..train.loop import fit
from .flags import add_batch_size, add_device, add_threads, add_trust_model_code, number, positive_int

S = argparse.SUPPRESS  # flags not given keep the config's value (the default, or the resumed run's)
non_negative = number(float, low=0)
positive = number(float, low=0, low_open=True)


def model_kw(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def milestones(text: str) -> tuple[int, ...]:
    """``"5,8"`` -> epochs (non-negative integers, increasing)."""
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs, got {text!r}") from None
    if any(v < 0 for v in vals) or list(vals) != sorted(vals):
        raise argparse.ArgumentTypeError(f"expected increasing non-negative epochs, got {text!r}")
    return vals


def add_train_arguments(p: argparse.ArgumentParser, *, with_out: bool = True) -> None:
    """The TrainConfig flags (shared by ``train`` and ``compare``); defaults are suppressed."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default=S,
        help="model name (globalctx.list_models()) or package.module:callable of your own code "
        "(default: resnet18_small)",
    )
    m.add_argument("--attn", default=S, help="block name (globalctx.list_blocks()) or none (default: none)")
    m.add_argument("--base-width", type=positive_int, default=S, help="base_width of the model (small ResNets)")
    m.add_argument(
        "--model-kw",
        type=model_kw,
        action="append",
        default=S,
        metavar="KEY=VALUE",
        help="extra create_model option, value parsed as JSON when it can be (repeatable)",
    )
    d = p.add_argument_group("data")
    d.add_argument("--data", default=S, help="fashion-mnist (default) or imagefolder:TRAIN_DIR,VAL_DIR")
    d.add_argument(
        "--data-dir",
        default=S,
        help="directory with the Fashion-MNIST IDX files "
        "(also: $GLOBALCTX_DATA, /usr/share/datasets/fashion-mnist, ~/.cache/globalctx)",
    )
    d.add_argument(
        "--download",
        action="store_true",
        default=S,
        help="fetch Fashion-MNIST from the official site into the user cache when it is missing",
    )
    d.add_argument("--subset", type=positive_int, default=S, help="train on a fixed class-balanced subset of N images")
    d.add_argument("--val-subset", type=positive_int, default=S, help="evaluate on a fixed subset of N images")
    d.add_argument("--image-size", type=positive_int, default=S, help="resize ImageFolder images to this square size")
    d.add_argument("--in-chans", type=int, default=S, choices=(1, 3), help="ImageFolder: 1 grey or 3 RGB")
    d.add_argument(
        "--workers", type=number(int, low=0), default=S, help="DataLoader workers (default: cores per process - 1)"
    )
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=positive_int, default=S, help="default: 10")
    add_batch_size(o, default=S, help="global batch over all processes (default: 128)")
    o.add_argument("--opt", choices=("sgd", "adamw"), default=S, help="default: sgd (momentum 0.9, Nesterov)")
    o.add_argument("--lr", type=positive, default=S, help="peak learning rate (default: 0.1)")
    o.add_argument(
        "--momentum", type=number(float, low=0, high=1, high_open=True), default=S, help="in [0, 1) (default 0.9)"
    )
    o.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=S)
    o.add_argument(
        "--wd",
        "--weight-decay",
        dest="weight_decay",
        type=non_negative,
        default=S,
        help="weight decay (default 5e-4); never applied to norms, biases, no_weight_decay() params",
    )
    o.add_argument("--sched", choices=("cosine", "step", "constant"), default=S, help="default: cosine")
    o.add_argument("--warmup-epochs", type=non_negative, default=S, help="linear warm-up (default: 1)")
    o.add_argument(
        "--milestones",
        type=milestones,
        default=S,
        help="step schedule: epochs at which lr *= gamma (default: 50%%, 75%% of epochs)",
    )
    o.add_argument("--gamma", type=positive, default=S, help="step schedule factor, > 0 (default: 0.1)")
    o.add_argument("--label-smoothing", type=number(float, low=0, high=1, high_open=True), default=S, help="in [0, 1)")
    o.add_argument("--grad-clip", type=positive, default=S, help="clip the gradient norm to this value")
    n = p.add_argument_group("numerics and speed")
    n.add_argument("--amp", choices=("none", "bf16", "fp16"), default=S, help="autocast dtype (fp16 uses GradScaler)")
    n.add_argument("--channels-last", action="store_true", default=S)
    n.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    add_device(n)
    n.add_argument("--seed", type=number(int, low=0), default=S, help="default: 0")
    n.add_argument("--deterministic", action="store_true", default=S, help="torch deterministic algorithms")
    add_threads(n, default=S)
    r = p.add_argument_group("run")
    if with_out:
        r.add_argument("--out", default=S, help="run directory (default: runs/train)")
    r.add_argument("--eval-every", type=positive_int, default=S, help="evaluate every N epochs (and after the last)")
    r.add_argument("--max-steps", type=positive_int, default=S, help="stop (with a checkpoint) after N global steps")
    r.add_argument(
        "--snapshots",
        type=_steps,
        default=S,
        help="also save the weights at these global steps (e.g. 0,50,200) as snapshots/step-N.safetensors, "
        "for `globalctx analyze --over-training`",
    )
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S)
    r.add_argument("--no-progress", dest="progress", action="store_false", default=S)
    r.add_argument("--dist-timeout", type=positive, default=S, help="seconds before a stuck collective fails")


def _steps(text: str) -> tuple[int, ...]:
    """``"0,50,200"`` -> global steps (ints >= 0), sorted, without repeats."""
    try:
        vals = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        vals = [-1]
    if not vals or vals[0] < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated steps >= 0 (e.g. 0,50,200), got {text!r}")
    return tuple(vals)


def config_changes(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the user set on the command line."""
    fields = set(TrainConfig.__dataclass_fields__)
    changes = {k: v for k, v in vars(args).items() if k in fields}
    kw = dict(getattr(args, "model_kw", None) or [])
    if "base_width" in vars(args):
        kw["base_width"] = args.base_width
    if kw:
        changes["model_kwargs"] = kw
    return changes


def maybe_download(args: argparse.Namespace, cfg) -> None:
    """With ``--download``, fetch Fashion-MNIST into the user cache when it cannot be found."""
    if getattr(args, "download", False) and parse_data_spec(cfg.data).kind == "fashion-mnist":
        try:
            find_fashion_mnist(cfg.data_dir)
        except DataError:
            download_fashion_mnist()


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model (single process or torchrun DDP), with exact --resume",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(p)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint; flags not given keep the run's values",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write a new run into a non-empty --out, replacing the run files there (config.json, last.*, best.*, "
        "log.csv); without it such a directory is refused",
    )
    add_trust_model_code(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    changes = config_changes(args)
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces one; give one of them")
    if args.resume:
        saved = ckpt.read_config(args.resume)["train"]
        saved["max_steps"] = None  # a stop at max_steps is not carried into the continuation
        if "model_kwargs" in changes:
            changes["model_kwargs"] = {**saved.get("model_kwargs", {}), **changes["model_kwargs"]}
        cfg = TrainConfig.from_dict({**saved, **changes, "out": args.resume})
    else:
        cfg = TrainConfig(**changes)
    resolve_device(cfg.device)  # an unusable device fails before any file is written
    maybe_download(args, cfg)
    result = fit(cfg, resume=args.resume, trust_model_code=args.trust_model_code, overwrite=args.overwrite)
    main = int(os.environ.get("RANK", "0")) == 0
    if args.json and main:
        print(json.dumps({k: v for k, v in result.items() if k != "config"}, default=str))
    if result["status"] == "interrupted" and result["signal"]:
        return 128 + int(result["signal"])  # SIGINT/SIGTERM were handled inside fit(): checkpoint saved
    if result["status"] == "completed" and main:
        print(
            f"done: val acc {result['val_acc']:.4f} (best {result['best_acc']:.4f}), run dir {result['run_dir']}",
            file=sys.stderr,
        )
    return 0


__all__ = ["add_parser", "run", "add_train_arguments", "config_changes", "maybe_download"]
