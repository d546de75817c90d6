"""Run a block comparison: train the same network with each global-context block under identical
settings and seeds (:func:`run_compare`), measure each trained model's cost with
:func:`globalctx.bench.profile`, then write the report (:mod:`globalctx.compare.report`).
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..bench import profile
from ..bench.report import machine_info
from ..layers import list_blocks
from ..train.checkpoint import build_model
from ..train.config import TrainConfig
from ..train.loop import fit

__all__ = [
    "DEFAULT_VARIANTS",
    "DEFAULT_SETTINGS",
    "FULL_SETTINGS",
    "CompareContext",
    "default_config",
    "resolve_variants",
    "measure_cost",
    "run_compare",
    "auto_threads",
    "PUBLISHED_NOTE",
]

DEFAULT_VARIANTS = ("none", "se", "gc", "snl", "nl", "dnl")

# The embedded default: sized to finish in about 10 minutes for six variants on a 2-core CPU.
# (The reasoning and the measured figures are in docs/training.md.)
DEFAULT_SETTINGS: dict[str, Any] = {
    "model": "resnet18_small",
    "model_kwargs": {"base_width": 16},  # narrower widths leave se with < 1 reduced channel in stage 1
    "data": "fashion-mnist",
    "subset": 5000,  # class-balanced, fixed by the seed
    "val_subset": 2000,  # class-balanced subset of the 10,000-image test set, fixed by the seed
    "epochs": 4,
    "batch_size": 64,
    "opt": "sgd",
    "lr": 0.1,
    "weight_decay": 5e-4,
    "sched": "cosine",
    "warmup_epochs": 0.3,
    "eval_every": 4,  # evaluate once, after the last epoch
    "seed": 0,
}
# --full: the real schedule on all 60,000 training images (hours on a CPU; minutes on a GPU)
FULL_SETTINGS: dict[str, Any] = {
    **DEFAULT_SETTINGS,
    "model_kwargs": {"base_width": 64},
    "subset": None,
    "val_subset": None,
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.1,
    "warmup_epochs": 1.0,
    "eval_every": 1,
}

PUBLISHED_NOTE = (
    "For context: the Fashion-MNIST benchmark lists ResNet18 at 94.9% test accuracy (full width, all "
    "60,000 training images, long schedule with flips/translation/rotation; zalandoresearch/fashion-mnist "
    "README). A reduced run is expected to land below that."
)


def default_config(full: bool = False, **changes) -> TrainConfig:
    """The compare default (or ``--full``) as a TrainConfig, with ``changes`` applied."""
    base = dict(FULL_SETTINGS if full else DEFAULT_SETTINGS)
    if "model_kwargs" in changes:
        changes["model_kwargs"] = {**base["model_kwargs"], **changes["model_kwargs"]}
    return TrainConfig(**{**base, "tensorboard": False, **changes})


def resolve_variants(requested: str | list[str] | None) -> tuple[list[str], list[str]]:
    """``(to_run, skipped)``: requested block names that are registered (``none`` always is)."""
    if requested is None:
        names = list(DEFAULT_VARIANTS)
        explicit = False
    else:
        names = [v.strip().lower() for v in (requested.split(",") if isinstance(requested, str) else requested)]
        names = [v for v in names if v]
        explicit = True
    known = set(list_blocks()) | {"none"}
    unknown = [v for v in names if v not in known]
    if explicit and unknown:
        raise ValueError(f"unknown variants {unknown}; registered blocks: none, {', '.join(sorted(known - {'none'}))}")
    return [v for v in names if v in known], unknown


def measure_cost(model: nn.Module, input_shape: tuple[int, ...], *, latency_runs: int = 20) -> dict:
    """Parameters, MACs of one image (conv/matmul, :func:`globalctx.bench.profile`) and median
    latency (ms) of a batch of one in eval mode, on the model's device (``latency_runs=0``: no
    timing, latency ``nan``)."""
    r = profile(model, (1, *input_shape), runs=max(latency_runs, 1), warmup=3 if latency_runs else 0, memory=())
    return {
        "params": r["params"],
        "macs_m": r["macs"] / 1e6,
        "latency_ms": r["latency_ms"] if latency_runs else float("nan"),
    }


def auto_threads() -> tuple[int | None, str]:
    """One intra-op thread when the machine is already busy (1-minute load average above the core
    count): small convolutions then run several times faster than with threads that wait on each
    other. ``(None, reason)`` keeps torch's default."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None, "load average unknown"
    if cores > 1 and load > cores:
        return 1, f"machine busy (load {load:.1f} on {cores} cores)"
    return None, f"load {load:.1f} on {cores} cores"


@dataclass
class CompareContext:
    """Everything a report section may need."""

    out_dir: Path
    base: TrainConfig
    variants: list[str]
    skipped: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per variant (results.csv)
    histories: dict[str, list[dict]] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    wall_time_s: float = 0.0
    started: str = ""
    environment: dict[str, str] = field(default_factory=dict)


def _environment() -> dict[str, str]:
    info = machine_info()
    return {k: info[k] for k in ("torch", "python", "cpu", "cores", "threads")}


def run_compare(
    base: TrainConfig,
    variants: list[str] | str | None = None,
    *,
    out_dir: str | Path | None = None,
    out_root: str | Path = "runs",
    latency: bool = True,
    log: Callable[[str], None] | None = None,
    sections: Sequence[Callable[[CompareContext], tuple[str, str] | None]] = (),
) -> CompareContext:
    """Train ``base`` once per variant (``attn``), all with the same seed and data order, into
    ``out_dir/<variant>/``; then write ``results.csv``, ``curves.png`` and ``report.md``
    (:func:`globalctx.compare.report.write_report`, with the extra ``sections``)."""
    from .report import write_report

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    names, skipped = resolve_variants(variants)
    if base.threads is None:
        threads, why = auto_threads()
        if threads is not None:
            base = base.replace(threads=threads)
            log(f"using {threads} thread(s): {why}")
    if not names:
        raise ValueError("no variant to run")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(out_root) / f"compare-{stamp}"
    ctx = CompareContext(out, base, names, skipped, started=stamp, environment=_environment())
    ctx.environment["threads"] = str(base.threads or torch.get_num_threads())
    if skipped:
        log(f"not registered, skipped: {', '.join(skipped)}")
    t_start = time.perf_counter()
    results: dict[str, dict] = {}
    for i, v in enumerate(names):
        cfg = base.replace(attn=None if v == "none" else v, out=str(out / v))
        log(f"[{i + 1}/{len(names)}] {v}: {cfg.model} {cfg.model_kwargs} epochs={cfg.epochs} subset={cfg.subset}")
        res = fit(cfg, log=log)
        if res["status"] != "completed":
            raise KeyboardInterrupt  # a signal stopped the variant: its checkpoint is saved, stop here
        results[v] = res
        ctx.run_dirs[v] = out / v
        ctx.histories[v] = res["history"]
    ctx.wall_time_s = time.perf_counter() - t_start
    if int(os.environ.get("RANK", "0")) != 0:
        return ctx  # under torchrun only rank 0 measures and writes the report

    base_acc = results[names[0]]["val_acc"] if names[0] == "none" else None
    threads = torch.get_num_threads()
    torch.set_num_threads(base.threads or threads)  # latency with the threads used for training
    for v in names:
        res = results[v]
        spec = res["config"]["model"]
        shape = tuple(res["config"]["data"]["image_shape"])
        torch.manual_seed(0)
        cost = measure_cost(build_model(spec), shape, latency_runs=20 if latency else 0)
        last = res["history"][-1]
        ctx.rows.append(
            {
                "variant": v,
                "top1": res["val_acc"],
                "best_top1": res["best_acc"],
                "val_loss": res["val_loss"],
                "delta_pp": None if base_acc is None else 100 * (res["val_acc"] - base_acc),
                "params": cost["params"],
                "macs_m": cost["macs_m"],
                "latency_ms": cost["latency_ms"] if latency else None,
                "train_time_s": res["train_time_s"],
                "train_acc": last["train_acc"],
                "epochs": len(res["history"]),
                "val_n": last.get("val_n"),
            }
        )
    torch.set_num_threads(threads)
    write_report(ctx, sections=sections)
    return ctx
