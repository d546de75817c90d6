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

S = argparse.SUPPRESS  # flags not given keep the config's value (the default, or the resumed run's)


def _error_types() -> tuple[type[BaseException], ...]:
    """Errors that end a command with one line instead of a traceback."""
    from .checkpoint import CheckpointError
    from .data import DataError
    from .loop import TrainError

    return (TrainError, DataError, CheckpointError, ValueError, OSError)


def _model_kw(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_train_arguments(p: argparse.ArgumentParser, *, with_out: bool = True) -> None:
    """The TrainConfig flags (shared by ``train`` and ``compare``); defaults are suppressed."""
    m = p.add_argument_group("model")
    m.add_argument(
        "--model",
        default=S,
        help="model name (globalctx.list_models()) or package.module:callable (default: resnet18_small)",
    )
    m.add_argument("--attn", default=S, help="block name (globalctx.list_blocks()) or none (default: none)")
    m.add_argument("--base-width", type=int, default=S, help="base_width of the model (small ResNets)")
    m.add_argument(
        "--model-kw",
        type=_model_kw,
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
    d.add_argument("--subset", type=int, default=S, help="train on a fixed class-balanced subset of N images")
    d.add_argument("--val-subset", type=int, default=S, help="evaluate on a fixed subset of N images")
    d.add_argument("--image-size", type=int, default=S, help="resize ImageFolder images to this square size")
    d.add_argument("--in-chans", type=int, default=S, choices=(1, 3), help="ImageFolder: 1 grey or 3 RGB")
    d.add_argument("--workers", type=int, default=S, help="DataLoader workers (default: cores per process - 1)")
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=S, help="default: 10")
    o.add_argument("-b", "--batch-size", type=int, default=S, help="global batch over all processes (default: 128)")
    o.add_argument("--opt", choices=("sgd", "adamw"), default=S, help="default: sgd (momentum 0.9, Nesterov)")
    o.add_argument("--lr", type=float, default=S, help="peak learning rate (default: 0.1)")
    o.add_argument("--momentum", type=float, default=S)
    o.add_argument("--no-nesterov", dest="nesterov", action="store_false", default=S)
    o.add_argument(
        "--wd",
        "--weight-decay",
        dest="weight_decay",
        type=float,
        default=S,
        help="weight decay (default 5e-4); never applied to norms, biases, no_weight_decay() params",
    )
    o.add_argument("--sched", choices=("cosine", "step", "constant"), default=S, help="default: cosine")
    o.add_argument("--warmup-epochs", type=float, default=S, help="linear warm-up (default: 1)")
    o.add_argument(
        "--milestones",
        type=lambda s: tuple(int(v) for v in s.split(",")),
        default=S,
        help="step schedule: epochs at which lr *= gamma (default: 50%%, 75%% of epochs)",
    )
    o.add_argument("--gamma", type=float, default=S)
    o.add_argument("--label-smoothing", type=float, default=S)
    o.add_argument("--grad-clip", type=float, default=S, help="clip the gradient norm to this value")
    n = p.add_argument_group("numerics and speed")
    n.add_argument("--amp", choices=("none", "bf16", "fp16"), default=S, help="autocast dtype (fp16 uses GradScaler)")
    n.add_argument("--channels-last", action="store_true", default=S)
    n.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    n.add_argument("--device", default=S, help="auto (default), cpu, cuda")
    n.add_argument("--seed", type=int, default=S, help="default: 0")
    n.add_argument("--deterministic", action="store_true", default=S, help="torch deterministic algorithms")
    n.add_argument("--threads", type=int, default=S, help="torch intra-op threads")
    r = p.add_argument_group("run")
    if with_out:
        r.add_argument("--out", default=S, help="run directory (default: runs/train)")
    r.add_argument("--eval-every", type=int, default=S, help="evaluate every N epochs (and after the last)")
    r.add_argument("--max-steps", type=int, default=S, help="stop (with a checkpoint) after N global steps")
    r.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=S)
    r.add_argument("--no-progress", dest="progress", action="store_false", default=S)
    r.add_argument("--dist-timeout", type=float, default=S, help="seconds before a stuck collective fails")


def config_changes(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the user set on the command line."""
    from .config import TrainConfig

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
    from .data import DataError, download_fashion_mnist, find_fashion_mnist, parse_data_spec

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
    p.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    errors = _error_types()
    try:
        from . import checkpoint as ckpt
        from .config import TrainConfig
        from .loop import fit

        changes = config_changes(args)
        if args.resume:
            saved = ckpt.read_config(args.resume)["train"]
            saved["max_steps"] = None  # a stop at max_steps is not carried into the continuation
            if "model_kwargs" in changes:
                changes["model_kwargs"] = {**saved.get("model_kwargs", {}), **changes["model_kwargs"]}
            cfg = TrainConfig.from_dict({**saved, **changes, "out": args.resume})
        else:
            cfg = TrainConfig(**changes)
        maybe_download(args, cfg)
        result = fit(cfg, resume=args.resume)
    except errors as e:
        print(f"globalctx train: error: {e}", file=sys.stderr)
        return 2
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
