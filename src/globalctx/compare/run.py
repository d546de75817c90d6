"""Run a seeded block comparison (:func:`run_compare`): train every variant under every seed with
the same settings, data order and augmentation per seed (a paired design), measure each variant's
cost with :func:`globalctx.bench.profile`, summarise the accuracies with Student-t intervals and
paired differences (:mod:`globalctx.compare.stats`), then write the report
(:mod:`globalctx.compare.report`).

Nothing is lost, nothing is redone: every (variant, seed) has its own run directory; a run that
is finished (matching config, every epoch in its checkpoint) is read back, not retrained; a
partial one is continued exactly; a run that fails is reported and the others go on. A directory
that is not this comparison is never written into without ``overwrite=True``.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
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
from ..train.checkpoint import build_model, read_config
from ..train.config import TrainConfig
from ..train.data import build_datasets
from ..train.loop import fit
from . import plan as P
from .estimate import format_duration, measure_variant, run_seconds
from .presets import Preset, get_preset
from .stats import Summary, summarize
from .variants import check_variant, format_variant, parse_variant, split_variants, variant_label

__all__ = [
    "DEFAULT_VARIANTS",
    "DEFAULT_SEEDS",
    "DEFAULT_SETTINGS",
    "FULL_SETTINGS",
    "PRESET_BUDGETS",
    "CompareContext",
    "CompareInterrupted",
    "default_config",
    "parse_seeds",
    "parse_variant_list",
    "resolve_variants",
    "measure_cost",
    "run_compare",
    "auto_threads",
    "PUBLISHED_NOTE",
]

# The embedded default (``make run``): 7 min 46 s measured on an idle 2-core CPU (benchmarks/results/training.md)
# (the measured figures are in docs/compare.md and benchmarks/results/training.md).
DEFAULT_VARIANTS = ("none", "se", "gc", "nl")
DEFAULT_SEEDS = 8  # t(0.975, 7) / sqrt(8) = 0.84 sd (3 seeds: 2.48 sd); 8.5 min measured on an idle 2-core CPU
DEFAULT_SETTINGS: dict[str, Any] = {
    "model": "resnet18_small",
    "model_kwargs": {"base_width": 16},  # narrower widths leave se with < 1 reduced channel in stage 1
    "data": "fashion-mnist",
    "subset": 3000,  # class-balanced, drawn with the seed
    "val_subset": None,  # the full 10,000-image test set: evaluation is cheap next to training
    "epochs": 3,
    "batch_size": 64,
    "opt": "sgd",
    "lr": 0.1,
    "weight_decay": 5e-4,
    "sched": "cosine",
    "warmup_epochs": 0.3,
    "eval_every": 3,  # evaluate once, after the last epoch
    "seed": 0,
}
# --full: the real schedule on all 60,000 training images (hours on a CPU; minutes on a GPU)
FULL_SETTINGS: dict[str, Any] = {
    **DEFAULT_SETTINGS,
    "model_kwargs": {"base_width": 64},
    "subset": None,
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.1,
    "warmup_epochs": 1.0,
    "eval_every": 30,
}
# each preset's default budget (training settings over DEFAULT_SETTINGS, and the number of seeds),
# sized so that gcnet-ablation's 16 variants x 3 seeds finish within half an hour on a 2-core CPU (29.7 min
# measured with 1 thread on a shared one; benchmarks/results/training.md), nl-ablation's 9 x 3 in less
PRESET_BUDGETS: dict[str, dict[str, Any]] = {
    "gcnet-ablation": {"seeds": 3, "subset": 4000},
    "nl-ablation": {"seeds": 3, "subset": 4000},
}

PUBLISHED_NOTE = (
    "For context: the Fashion-MNIST benchmark lists ResNet18 at 94.9% test accuracy (full width, all "
    "60,000 training images, long schedule with flips/translation/rotation; zalandoresearch/fashion-mnist "
    "README). A reduced run is expected to land below that."
)


class CompareInterrupted(KeyboardInterrupt):
    """A signal stopped a run; its checkpoint and every finished run are kept."""


def default_config(full: bool = False, preset: str | None = None, **changes) -> TrainConfig:
    """The compare default (``full``: the real schedule; ``preset``: that preset's budget) as a
    TrainConfig, with ``changes`` applied."""
    base = dict(FULL_SETTINGS if full else DEFAULT_SETTINGS)
    if preset is not None and not full:
        base.update({k: v for k, v in PRESET_BUDGETS.get(preset, {}).items() if k != "seeds"})
    if "model_kwargs" in changes:
        changes["model_kwargs"] = {**base["model_kwargs"], **changes["model_kwargs"]}
    if "epochs" in changes and "eval_every" not in changes:
        changes["eval_every"] = changes["epochs"]  # still one evaluation, after the last epoch
    cfg = {**base, "tensorboard": False, **changes}
    cfg["warmup_epochs"] = min(cfg["warmup_epochs"], cfg["epochs"])
    return TrainConfig(**cfg)


def parse_seeds(text: str | Sequence[int] | int, first: int = 0) -> list[int]:
    """``"0,1,2"`` -> those seeds; ``"3"`` (one number) -> 3 seeds from ``first`` (``first,
    first+1, first+2``). Seeds are distinct non-negative integers."""
    if isinstance(text, int):
        text = str(text)
    if not isinstance(text, str):
        seeds = [int(s) for s in text]
    else:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"--seeds {text!r}: give a count (3) or a list of seeds (0,1,2)") from None
        if len(nums) == 1 and "," not in text:
            if nums[0] < 1:
                raise ValueError(f"--seeds {text!r}: a count must be >= 1")
            return list(range(first, first + nums[0]))
        seeds = nums
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct non-negative integers, got {text!r}")
    return seeds


def _continues_setting(piece: str) -> bool:
    """Whether the text after a comma goes on with a setting (``stages=3,4``, ``indices=0,-1``,
    ``stages=c3,c4``) rather than starting the next spec."""
    return re.match(r"(-?\d|(c|res|layer)\d)", piece.strip().lower()) is not None


def parse_variant_list(text: str | Sequence[str]) -> list[str]:
    """Specs separated by spaces, ``;`` or commas (a comma inside ``(...)`` or a setting such as
    ``stages=3,4`` belongs to the spec: a piece that starts with a number or a stage name goes on),
    returned in canonical form (:func:`~globalctx.compare.variants.format_variant`), each once."""
    items = split_variants(text) if isinstance(text, str) else [s for t in text for s in split_variants(t)]
    specs: list[str] = []
    for item in items:
        depth, cur = 0, ""
        pieces = []
        for ch in item:
            depth += (ch == "(") - (ch == ")")
            if ch == "," and depth == 0:
                pieces.append(cur)
                cur = ""
            else:
                cur += ch
        pieces.append(cur)
        for j, piece in enumerate(pieces):
            if not piece:
                continue
            if j > 0 and _continues_setting(piece):
                specs[-1] += "," + piece  # stages=3,4 or indices=0,-1: the spec goes on
            else:
                specs.append(piece)
    out: list[str] = []
    for s in specs:
        canon = format_variant(parse_variant(s))
        if canon not in out:
            out.append(canon)
    if not out:
        raise ValueError("no variant given; e.g. --variants 'none gc gc(rd_ratio=1/4)'")
    return out


def resolve_variants(requested: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(to_run, skipped)``: the requested specs in canonical form (the default list when
    ``None``; default blocks that are not registered are skipped, requested ones must exist)."""
    if requested is not None:
        return parse_variant_list(requested), []
    known = set(list_blocks()) | {"none"}
    return [v for v in DEFAULT_VARIANTS if v in known], [v for v in DEFAULT_VARIANTS if v not in known]


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
    seeds: list[int] = field(default_factory=lambda: [0])
    labels: dict[str, str] = field(default_factory=dict)
    preset: Preset | None = None
    skipped: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)  # one per finished (variant, seed): results.csv
    costs: dict[str, dict] = field(default_factory=dict)  # per variant: params, macs_m, latency_ms
    histories: dict[str, dict[int, list[dict]]] = field(default_factory=dict)
    run_dirs: dict[str, Path] = field(default_factory=dict)  # per variant, its first finished seed
    failed: list[dict] = field(default_factory=list)  # variant, seed, error
    trained: list[tuple[str, int]] = field(default_factory=list)  # runs trained by this call
    reused: list[tuple[str, int]] = field(default_factory=list)  # finished runs read back
    summary: Summary | None = None
    figures: list[str] = field(default_factory=list)
    estimate_s: float | None = None
    analysis: str = "all"  # which variants the attention analysis covers: all, defaults, none
    wall_time_s: float = 0.0
    started: str = ""
    environment: dict[str, str] = field(default_factory=dict)

    def label(self, variant: str) -> str:
        return self.labels.get(variant) or variant_label(variant)


def _environment(threads: int) -> dict[str, str]:
    info = machine_info()
    env = {k: info[k] for k in ("torch", "python", "cpu", "cores")}
    env["threads"] = str(threads)
    env["machine"] = f"{platform.system()} {platform.machine()}"
    if "gpu" in info:
        env["gpu"] = info["gpu"]
    try:
        env["load_at_start"] = f"{os.getloadavg()[0]:.2f}"
    except OSError:
        pass
    return env


def _open_out(out: Path, base: TrainConfig, overwrite: bool) -> dict | None:
    """Check that ``out`` is this comparison (or new, or ``overwrite``); returns its manifest."""
    manifest = P.read_manifest(out)
    if manifest is None:
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise ValueError(
                f"{out} is not empty and holds no comparison ({P.MANIFEST} missing); choose another --out, "
                "or pass --overwrite to write the comparison's files there"
            )
        return None
    diff = P.config_differences(base.to_dict(), manifest.get("base", {}))
    if diff and not overwrite:
        raise ValueError(
            f"{out} holds a comparison with other settings: {'; '.join(diff)}; continue it with "
            f"--resume {out} (without those flags), choose another --out, or pass --overwrite to retrain its runs"
        )
    return manifest


def _datasets_info(cfg: TrainConfig) -> tuple[tuple[int, ...], int, int, int]:
    train_ds, val_ds = build_datasets(cfg.data, data_dir=cfg.data_dir, subset=cfg.subset, val_subset=cfg.val_subset,
                                      seed=cfg.seed, in_chans=cfg.in_chans or 3, image_size=cfg.image_size)  # fmt: skip
    return tuple(train_ds.image_shape), len(train_ds.classes), len(train_ds), len(val_ds)


def _estimate(todo: list[P.PlannedRun], log) -> dict[tuple[str, int], float]:
    """Expected seconds per run still to train, from a quick measured step time per variant."""
    if not todo:
        return {}
    shape, classes, n_train, n_test = _datasets_info(todo[0].config)
    per_variant: dict[str, float] = {}
    for r in todo:
        if r.variant not in per_variant:
            try:
                cost = measure_variant(r.config, shape, classes)
            except (ValueError, TypeError) as e:  # the variant cannot be built at this width: fail before training
                model = f"{r.config.model} {r.config.model_kwargs}"
                raise ValueError(f"variant {r.variant!r} does not fit {model}: {e}") from None
            per_variant[r.variant] = run_seconds(cost, r.config, n_train, n_test)
    return {(r.variant, r.seed): per_variant[r.variant] for r in todo}


def _result_row(run: P.PlannedRun, state: dict, label: str) -> dict:
    hist = state["history"]
    last = hist[-1]
    return {
        "variant": run.variant,
        "label": label,
        "seed": run.seed,
        "top1": last["val_acc"],
        "best_top1": float(state.get("best_acc", last["val_acc"])),
        "val_loss": last.get("val_loss"),
        "val_n": last.get("val_n"),
        "train_loss": last["train_loss"],
        "train_acc": last["train_acc"],
        "epochs": len(hist),
        "train_time_s": float(state.get("train_time_s", last.get("train_time_s", 0.0))),
        "threads": read_config(run.run_dir)["train"].get("threads"),
        "run_dir": str(run.run_dir),
    }


def _train(run: P.PlannedRun, status: str, log) -> dict:
    """Continue a partial run exactly; start a missing one (or, when allowed, replace another's files)."""
    if status == "partial":
        return fit(run.config, resume=run.run_dir, log=log)
    return fit(run.config, overwrite=True, log=log)


def run_compare(
    base: TrainConfig,
    variants: Sequence[str] | str | None = None,
    seeds: Sequence[int] | str | int | None = None,
    *,
    out_dir: str | Path | None = None,
    out_root: str | Path = "runs",
    preset: str | Preset | None = None,
    overwrite: bool = False,
    latency: bool = True,
    analysis: str | None = None,
    log: Callable[[str], None] | None = None,
    sections: Sequence[Callable[[CompareContext], tuple[str, str] | None]] = (),
) -> CompareContext:
    """Train ``base`` once per (variant, seed) into ``out_dir/<variant>/seed<k>/`` (only the runs
    not already finished there), then write ``results.csv``, ``summary.json``, the figures and
    ``report.md`` (:func:`globalctx.compare.report.write_report`, with the extra ``sections``).

    ``variants`` are specs of :mod:`globalctx.compare.variants` (a list, or one string separated
    by spaces / ``;`` / commas); the first one is the baseline of the paired differences. A
    ``preset`` gives the variants (and its rows in the report) when ``variants`` is ``None``.
    ``seeds``: a list, a count (from ``base.seed``) or ``None`` (:data:`DEFAULT_SEEDS`). A failing
    run is recorded in ``ctx.failed`` and the others still run; a signal stops the comparison with
    :class:`CompareInterrupted` after the interrupted run has saved its checkpoint. ``analysis``:
    which variants the attention analysis covers (``"all"``, ``"defaults"``: bare block names
    only, ``"none"``; default: ``"defaults"`` for a preset, else ``"all"``).
    """
    from .report import write_report

    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if isinstance(preset, str):
        preset = get_preset(preset)
    if variants is None and preset is not None:
        names, skipped = preset.variants(), []
    else:
        names, skipped = resolve_variants(variants)
    for v in names:
        check_variant(v)  # a bad option value fails here, before anything is trained
    if not names:
        raise ValueError("no variant to run")
    n_seeds = DEFAULT_SEEDS if seeds is None else seeds
    seed_list = parse_seeds(n_seeds, base.seed) if isinstance(n_seeds, (str, int)) else parse_seeds(list(n_seeds))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(out_dir) if out_dir else Path(out_root) / f"compare-{stamp}"
    base = base.replace(seed=seed_list[0], attn=None, out=str(out))
    manifest = _open_out(out, base, overwrite)
    if base.threads is None:  # a concrete count, recorded in compare.json, so a resumed comparison keeps it
        saved = (manifest or {}).get("base", {}).get("threads")
        threads, why = (saved, "as the runs already in this comparison") if saved else auto_threads()
        base = base.replace(threads=threads or torch.get_num_threads())
        log(f"using {base.threads} thread(s): {why}")
    labels = {v: variant_label(v) for v in names}
    ctx = CompareContext(out, base, names, seed_list, labels, preset, skipped, started=stamp,
                         environment=_environment(base.threads or torch.get_num_threads()))  # fmt: skip
    ctx.analysis = analysis or ("defaults" if preset is not None else "all")
    if skipped:
        log(f"not registered, skipped: {', '.join(skipped)}")
    runs = P.plan_runs(base, names, seed_list, out)
    statuses = {(r.variant, r.seed): P.run_status(r) for r in runs}
    other = [(r, statuses[(r.variant, r.seed)][1]) for r in runs if statuses[(r.variant, r.seed)][0] == "other"]
    if other and not overwrite:
        r, why = other[0]
        raise ValueError(f"{r.run_dir} holds files of another run ({why}); pass --overwrite to retrain it, "
                         "or choose another --out")  # fmt: skip
    main_rank = int(os.environ.get("RANK", "0")) == 0
    if main_rank:
        out.mkdir(parents=True, exist_ok=True)
        P.write_manifest(out, base, names, seed_list, preset.name if preset else None)
    todo = [r for r in runs if statuses[(r.variant, r.seed)][0] != "finished"]
    ctx.reused = [(r.variant, r.seed) for r in runs if statuses[(r.variant, r.seed)][0] == "finished"]
    log(f"comparison {out}: {len(names)} variants x {len(seed_list)} seeds ({', '.join(map(str, seed_list))}) = "
        f"{len(runs)} runs; {len(ctx.reused)} finished already, {len(todo)} to train")  # fmt: skip
    t_est = time.perf_counter()
    est = _estimate(todo, log)
    ctx.estimate_s = sum(est.values()) if est else 0.0
    if todo:
        per_run = ", ".join(f"{v} {format_duration(s)}" for v, s in {k[0]: s for k, s in est.items()}.items())
        log(f"estimated time: {format_duration(ctx.estimate_s)} for {len(todo)} runs (per run: {per_run}; from step "
            f"times measured now with {base.threads or torch.get_num_threads()} thread(s) in "
            f"{time.perf_counter() - t_est:.0f} s; other load on the machine slows the runs down)")  # fmt: skip
    t_start = time.perf_counter()
    est_done = 0.0  # estimated seconds of the runs done so far (to rescale the rest)
    for i, r in enumerate(todo):
        key = (r.variant, r.seed)
        status = statuses[key][0]
        what = "continuing" if status == "partial" else "training"
        log(f"[{i + 1}/{len(todo)}] {what} {labels[r.variant]} ({r.variant}), seed {r.seed} -> {r.run_dir}")
        t0 = time.perf_counter()
        try:
            res = _train(r, status, log)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a failing run must not lose the finished ones
            ctx.failed.append({"variant": r.variant, "seed": r.seed, "error": f"{type(e).__name__}: {e}"})
            log(f"[{i + 1}/{len(todo)}] FAILED {r.variant}, seed {r.seed}: {type(e).__name__}: {e}")
            est_done += est.get(key, 0.0)
            continue
        if res["status"] != "completed":
            raise CompareInterrupted(f"stopped during {r.variant}, seed {r.seed}; finished runs are kept: "
                                     f"continue with globalctx compare --resume {out}")  # fmt: skip
        ctx.trained.append(key)
        took = time.perf_counter() - t0
        est_done += est.get(key, 0.0)
        elapsed = time.perf_counter() - t_start
        left = (ctx.estimate_s - est_done) * elapsed / max(est_done, 1e-9)
        log(f"[{i + 1}/{len(todo)}] done {r.variant}, seed {r.seed}: top-1 {100 * res['val_acc']:.2f}% in "
            f"{format_duration(took)} (estimated {format_duration(est.get(key, 0.0))}); elapsed "
            f"{format_duration(elapsed)}, about {format_duration(left)} left")  # fmt: skip
    ctx.wall_time_s = time.perf_counter() - t_start
    if not main_rank:
        return ctx  # under torchrun only rank 0 measures and writes the report
    _collect(ctx, runs, latency)
    write_report(ctx, sections=sections)
    return ctx


def _collect(ctx: CompareContext, runs: list[P.PlannedRun], latency: bool) -> None:
    """Rows, histories, costs and the summary from the finished runs' checkpoints."""
    results: dict[str, dict[int, float]] = {v: {} for v in ctx.variants}
    for r in runs:
        state = P.finished_state(r)
        if state is None:
            continue
        row = _result_row(r, state, ctx.label(r.variant))
        ctx.rows.append(row)
        results[r.variant][r.seed] = row["top1"]
        ctx.histories.setdefault(r.variant, {})[r.seed] = list(state["history"])
        ctx.run_dirs.setdefault(r.variant, r.run_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.base.threads or threads)  # latency with the threads used for training
    try:
        for v, d in ctx.run_dirs.items():
            cfg = read_config(d)
            torch.manual_seed(0)
            shape = tuple(cfg["data"]["image_shape"])
            ctx.costs[v] = measure_cost(build_model(cfg["model"]), shape, latency_runs=20 if latency else 0)
            if not latency:
                ctx.costs[v]["latency_ms"] = None
    finally:
        torch.set_num_threads(threads)
    for row in ctx.rows:
        row.update({k: ctx.costs[row["variant"]][k] for k in ("params", "macs_m", "latency_ms")})
    have = {v: accs for v, accs in results.items() if accs}
    n_test = next((row["val_n"] for row in ctx.rows if row.get("val_n")), None)
    if ctx.variants[0] in have:
        ctx.summary = summarize(have, ctx.variants[0], n_test=n_test, labels=ctx.labels)
