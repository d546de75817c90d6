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
from pathlib import Path

from ..device import resolve_device
from ..train import checkpoint as ckpt
from ..train.config import TrainConfig
from ..train.data import DataError, download_fashion_mnist, find_fashion_mnist, parse_data_spec
from ..train.initial import read_state_dict
from ..train.loop import fit
from .config_file import read_config_file
from .flags import add_batch_size, add_device, add_threads, add_trust_model_code, number, positive_int
from .needs import require_for_run

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


AMP_SPELLINGS = {"none": "none", "bf16": "bf16", "fp16": "fp16", "bfloat16": "bf16", "float16": "fp16"}


def amp_mode(text: str) -> str:
    """``none``, ``bf16``, ``fp16`` (timm's ``bfloat16``, ``float16`` accepted)."""
    if text not in AMP_SPELLINGS:
        raise argparse.ArgumentTypeError(f"expected none, bf16 or fp16 (or bfloat16, float16), got {text!r}")
    return AMP_SPELLINGS[text]


def amp_changes(args: argparse.Namespace) -> dict:
    """``--amp MODE``, or a bare ``--amp`` with ``--amp-dtype`` (timm's spelling), as ``{"amp": MODE}``."""
    amp, dtype = getattr(args, "amp", None), getattr(args, "amp_dtype", None)
    if amp is True:
        return {"amp": dtype or "fp16"}
    if dtype is not None and amp != dtype:
        raise ValueError(f"--amp-dtype {dtype} goes with a bare --amp; or give --amp {dtype}")
    return {} if amp is None else {"amp": amp}


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
    m.add_argument(  # timm's spelling: several KEY=VALUE after one flag
        "--model-kwargs", dest="model_kw", type=model_kw, nargs="+", action="extend", default=S, metavar="KEY=VALUE",
        help="timm's spelling of --model-kw: several KEY=VALUE after one flag",
    )
    m.add_argument(
        "--initial-checkpoint",
        metavar="FILE",
        default=S,
        help="start from these weights: a torchvision, timm, mmcv or globalctx state dict (.safetensors, or .pt "
        "read weights-only); keys that do not match are reported, not loaded",
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
    d.add_argument(
        "--image-size", "--img-size", dest="image_size", type=positive_int, default=S,
        help="resize ImageFolder images to this square size",
    )  # fmt: skip
    d.add_argument("--in-chans", type=int, default=S, choices=(1, 3), help="ImageFolder: 1 grey or 3 RGB")
    d.add_argument(
        "-j", "--workers", dest="workers", type=number(int, low=0), default=S,
        help="DataLoader workers (default: cores per process - 1)",
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
    o.add_argument(
        "--grad-clip", "--clip-grad", dest="grad_clip", type=positive, default=S,
        help="clip the gradient norm to this value",
    )  # fmt: skip
    n = p.add_argument_group("numerics and speed")
    n.add_argument(
        "--amp",
        type=amp_mode,
        nargs="?",
        const=True,
        default=S,
        metavar="{none,bf16,fp16}",
        help="autocast dtype (fp16 uses GradScaler); a bare --amp takes --amp-dtype (default fp16, as timm)",
    )
    n.add_argument("--amp-dtype", type=amp_mode, default=S, help="with a bare --amp: float16 or bfloat16 (timm)")
    n.add_argument("--channels-last", action="store_true", default=S)
    n.add_argument("--compile", action="store_true", default=S, help="torch.compile the model")
    add_device(n)
    n.add_argument("--seed", type=number(int, low=0), default=S, help="default: 0")
    n.add_argument("--deterministic", action="store_true", default=S, help="torch deterministic algorithms")
    add_threads(n, default=S)
    r = p.add_argument_group("run")
    if with_out:
        r.add_argument("--out", "--output", dest="out", default=S, help="run directory (default: runs/train)")
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
    """The TrainConfig fields the user set: a ``--config`` file's values, then the flags over them."""
    fields = set(TrainConfig.__dataclass_fields__)
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    changes = {**from_file, **{k: v for k, v in vars(args).items() if k in fields}, **amp_changes(args)}
    kw = {**from_file.get("model_kwargs", {}), **dict(getattr(args, "model_kw", None) or [])}
    if "base_width" in vars(args):
        kw["base_width"] = args.base_width
    if kw:
        changes["model_kwargs"] = kw
    return changes


def add_config_file(p: argparse.ArgumentParser) -> None:
    """``-c/--config FILE.toml`` (see :mod:`globalctx.cli.config_file`)."""
    p.add_argument(
        "-c", "--config", metavar="FILE.toml", help="settings from a TOML file (TrainConfig keys); flags override it"
    )


def check_resume(resume: str | None, changes: dict) -> None:
    """``--resume`` takes a run directory; a weights file is refused naming what to give instead."""
    if resume is None:
        return
    path = Path(resume)
    if path.is_file():
        raise ValueError(
            f"--resume {resume} is a file; give the run directory that holds it ({path.parent}) to continue that run, "
            f"or --initial-checkpoint {resume} to start a new run from its weights"
        )
    if "initial_checkpoint" in changes:
        raise ValueError("--initial-checkpoint starts a new run; a resumed run continues from its own weights")


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
    add_config_file(p)
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
    require_for_run("training", data=changes.get("data"))  # before a resumed run is read
    if args.resume and args.overwrite:
        raise ValueError("--resume continues a run and --overwrite replaces one; give one of them")
    check_resume(args.resume, changes)
    if args.resume:
        saved = ckpt.read_config(args.resume)["train"]
        saved["max_steps"] = None  # a stop at max_steps is not carried into the continuation
        if "model_kwargs" in changes:
            changes["model_kwargs"] = {**saved.get("model_kwargs", {}), **changes["model_kwargs"]}
        cfg = TrainConfig.from_dict({**saved, **changes, "out": args.resume})
    else:
        cfg = TrainConfig(**changes)
    require_for_run("training", data=cfg.data)  # a resumed run's own data, before any file is written
    resolve_device(cfg.device)  # an unusable device fails before any file is written
    if cfg.initial_checkpoint and not args.resume:
        read_state_dict(cfg.initial_checkpoint)  # a missing or unsafe file fails before any file is written
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


__all__ = ["add_parser", "run", "add_train_arguments", "add_config_file", "config_changes", "maybe_download"]
