"""``compare``: train the same network with each global-context block under identical settings and
seeds, then write ``report.md``, ``results.csv`` and PNG curves.

The report is assembled by :func:`build_report_sections` from a list of ``(title, markdown)``
sections. Other parts of the library add their own sections (e.g. attention statistics of the
trained models) with :func:`register_report_section`; each hook receives the
:class:`CompareContext` (run directories, configs, results) and returns a section or ``None``.
"""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import TrainConfig

__all__ = [
    "DEFAULT_VARIANTS",
    "DEFAULT_SETTINGS",
    "FULL_SETTINGS",
    "CompareContext",
    "default_config",
    "resolve_variants",
    "measure_cost",
    "run_compare",
    "build_report_sections",
    "register_report_section",
    "write_report",
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
    from ..layers import list_blocks

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
    """Parameters, MACs of one image (FlopCounterMode: conv/matmul only) and median CPU latency (ms)
    of a batch of one in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    model = model.eval()
    x = torch.randn(1, *input_shape)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    times = []
    with torch.inference_mode():
        for i in range(latency_runs + 3):
            t0 = time.perf_counter()
            model(x)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1e3)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "macs_m": fc.get_total_flops() / 2 / 1e6,
        "latency_ms": statistics.median(times) if times else float("nan"),
    }


def auto_threads() -> tuple[int | None, str]:
    """One intra-op thread when the machine is already busy (1-minute load average above the core
    count): small convolutions then run several times faster than with threads that wait on each
    other. ``(None, reason)`` keeps torch's default."""
    import os

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


_EXTRA_SECTIONS: list[Callable[[CompareContext], tuple[str, str] | None]] = []


def register_report_section(fn: Callable[[CompareContext], tuple[str, str] | None]):
    """Append ``fn(ctx) -> (title, markdown) | None`` to every compare report (usable as a decorator)."""
    _EXTRA_SECTIONS.append(fn)
    return fn


def _environment() -> dict[str, str]:
    import platform

    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "threads": str(torch.get_num_threads()),
    }


def run_compare(
    base: TrainConfig,
    variants: list[str] | str | None = None,
    *,
    out_dir: str | Path | None = None,
    out_root: str | Path = "runs",
    latency: bool = True,
    log: Callable[[str], None] | None = None,
) -> CompareContext:
    """Train ``base`` once per variant (``attn``), all with the same seed and data order, into
    ``out_dir/<variant>/``; then write ``results.csv``, ``curves.png`` and ``report.md``."""
    from .loop import fit

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
        log(f"not registered in this build, skipped: {', '.join(skipped)}")
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

    from .checkpoint import build_model

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
    write_report(ctx)
    return ctx


# ----------------------------------------------------------------------------- report
def build_report_sections(ctx: CompareContext) -> list[tuple[str, str]]:
    """The report as ``(title, markdown)`` sections: settings, results table, curves, context, then
    every section registered with :func:`register_report_section`."""
    from .report import curves_section, results_table, settings_section

    sections = [
        ("Settings", settings_section(ctx)),
        ("Results", results_table(ctx.rows) + "\n\n" + _result_notes(ctx)),
    ]
    if ctx.figures:
        sections.append(("Curves", curves_section(ctx)))
    sections.append(("Context", PUBLISHED_NOTE))
    for fn in _EXTRA_SECTIONS:
        try:
            sec = fn(ctx)
        except Exception as e:  # a broken extra section must not lose the trained results
            sec = (getattr(fn, "__name__", "extra section"), f"(this section failed: {type(e).__name__}: {e})")
        if sec is not None:
            sections.append(sec)
    return sections


def _result_notes(ctx: CompareContext) -> str:
    n = ctx.rows[0].get("val_n") if ctx.rows else None
    notes = [
        f"top-1: accuracy after the last epoch on {n} test images; delta: percentage points vs `none`.",
        "MACs: one 28x28 image, conv/matmul only (torch FlopCounterMode / 2). latency: median of 20 "
        f"batch-1 forwards on CPU ({ctx.environment.get('threads')} threads). train time: the training "
        "epochs only (no evaluation), wall clock.",
        f"Total wall time of all training runs: {ctx.wall_time_s / 60:.1f} min.",
    ]
    if ctx.skipped:
        notes.append(f"Not registered in this build (skipped): {', '.join(ctx.skipped)}.")
    return "\n".join(f"- {s}" for s in notes)


def write_report(ctx: CompareContext) -> Path:
    """Write results.csv, curves.png (when matplotlib is available) and report.md into ``ctx.out_dir``."""
    from .report import plot_curves, write_csv

    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(ctx.out_dir / "results.csv", ctx.rows)
    try:
        ctx.figures = [p.name for p in plot_curves(ctx.histories, ctx.out_dir)]
    except ImportError:
        ctx.figures = []
    body = [f"# Block comparison ({ctx.started})\n"]
    for title, md in build_report_sections(ctx):
        body.append(f"## {title}\n\n{md.rstrip()}\n")
    path = ctx.out_dir / "report.md"
    path.write_text("\n".join(body))
    return path


@register_report_section
def _attention_analysis(ctx: CompareContext) -> tuple[str, str] | None:
    """GCNet's query-independence statistics and attention figures of the NL/DNL/GC/SNL variants."""
    from ..analysis import compare_section

    return compare_section(ctx)
