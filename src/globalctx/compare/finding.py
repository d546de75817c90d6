"""GCNet's finding tested on learned maps: NL, SNL, GC and DNL trained on the two canvas tasks.

GCNet (Cao et al., 2019, §2.2) found that a trained NL block computes almost the same attention
map for every query. This study trains one network per (task, block, seed) and measures it:

- tasks (:mod:`globalctx.train.canvas`): ``fmnist-canvas`` (one item among clutter: every
  position needs the same context, *where the object is*; GCNet's situation) and ``fmnist-pairs``
  (same class or not: a position on one item must look at the *other* item; the positive control,
  where query-dependent maps are useful);
- network: ``resnet18`` (ImageNet stem, ``base_width=16``) on the 64x64 canvases, one block after
  the last residual add of stage 2 (8x8 positions), the same place for every block;
- init: the official one everywhere except the NL/DNL query/key embeddings, drawn with
  ``embed_gain`` (std ``G/sqrt(C)``; :class:`~globalctx.layers.NonLocal`): ``G = 1`` for NL and
  ``G = 0.22 ~ sqrt(0.05)`` for DNL, whose logits are also divided by its temperature 0.05, so both
  start with logits of the same order; from the official std 0.01 the maps stay flat within this
  budget and the statistic would test nothing;
- measured per run: GCNet's statistics (cos(input), cos(output), cos(att), JSD(att)), entropy,
  cos(att - mean), the share of the maps' deviation from flat common to all queries, and for DNL
  the same for its whitened pairwise term and its unary map (DNL's claim: the pairwise term is
  query-specific, the unary term carries the common part); accuracy over seeds with Student-t
  intervals (:mod:`globalctx.compare.stats`); the statistics at snapshots over training (seed 0);
- written to ``out_dir``: ``report.md``, ``finding.json``, figures (maps of 6 images x 3 queries per
  task and block, statistics over training per task).

Resumable: each run lives in ``out_dir/<task>/<block>/seed<k>/``; a run whose ``config.json``
matches and whose checkpoint is complete is skipped, one stopped midway is resumed, one with a
different config is refused (nothing is overwritten). Per-run analyses are cached in
``analysis.json`` beside the run.

Command: ``python -m globalctx.compare.finding --out runs/finding``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..train import checkpoint as ckpt
from ..train.config import TrainConfig
from .stats import mean_interval, summarize

__all__ = ["FINDING_SETTINGS", "FINDING_TASKS", "FINDING_BLOCKS", "run_finding", "run_spec", "main"]

FINDING_TASKS = ("fmnist-canvas", "fmnist-pairs")
FINDING_BLOCKS = ("nl", "snl", "gc", "dnl")
# 16 runs, 12,000 steps: 8 min 33 s measured on an idle 2-core CPU with 2 threads (benchmarks/results/analysis.md).
FINDING_SETTINGS: dict[str, Any] = {
    "model": "resnet18",
    "model_kwargs": {"base_width": 16},
    "batch_size": 64,
    "opt": "sgd",
    "lr": 0.05,
    "weight_decay": 5e-4,
    "sched": "cosine",
    "warmup_epochs": 0.1,
    "val_subset": 2000,
}
# training canvases per task (one epoch each): the control needs more steps to leave chance
TASK_IMAGES = {"fmnist-canvas": 32_000, "fmnist-pairs": 64_000}
EMBED_GAIN = {"nl": 1.0, "dnl": 0.22}  # DNL: ~sqrt(temperature 0.05), the same init logit scale as NL
STAGE = 2
SNAPSHOT_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)
FLAT_ENTROPY = 0.98  # mean normalised entropy above which maps count as flat (finding "not tested")
FAR_MORE_ALIKE = 0.5  # GCNet's finding: cos(att) < this x cos(input)
LEARNED_ENTROPY, LEARNED_PEAK = 0.8, 3.0  # target for learned maps


def run_spec(
    task: str, block: str, seed: int, out: Path, *, settings: dict | None = None, threads=None, snapshots: bool = False
) -> TrainConfig:
    """The training config of one run of the study (block at stage 2, last residual add); with
    ``snapshots``, weights saved at :data:`SNAPSHOT_FRACTIONS` of the steps."""
    from ..models import Placement

    opts = {"embed_gain": EMBED_GAIN[block]} if block in EMBED_GAIN else {}
    placement = Placement(block, stages=(STAGE,), indices=(-1,), position="after_add", **opts).to_dict()
    s = {**FINDING_SETTINGS, **(settings or {})}
    n = int(s.pop("subset", None) or TASK_IMAGES[task])
    steps = n // s["batch_size"]
    snaps = tuple(sorted({int(round(f * steps)) for f in SNAPSHOT_FRACTIONS})) if snapshots else ()
    return TrainConfig(
        **s,
        attn=placement,
        data=task,
        subset=n,
        epochs=1,
        seed=seed,
        threads=threads,
        out=str(out),
        tensorboard=False,
        progress=False,
        snapshots=snaps,
    )


def _same(a: dict, b: dict) -> bool:
    keys = (set(a) | set(b)) - {"out", "threads", "progress", "tensorboard", "workers", "snapshots"}
    return all(json.dumps(a.get(k), sort_keys=True) == json.dumps(b.get(k), sort_keys=True) for k in keys)


def _train(cfg: TrainConfig, log) -> tuple[dict, float]:
    """Train, resume or skip one run; returns (its config.json, wall seconds spent now)."""
    from ..train.loop import fit

    out = Path(cfg.out)
    t0 = time.perf_counter()
    if (out / ckpt.CONFIG_NAME).exists():
        saved = ckpt.read_config(out)
        if not _same(saved["train"], cfg.to_dict()):
            raise ValueError(f"{out} holds a run with other settings; remove it or choose another --out")
        state = out / "last.state.pt"
        if state.exists() and int(ckpt.load_state(state).get("epoch", 0)) >= cfg.epochs:
            return saved, 0.0
        log(f"resuming {out}")
        res = fit(cfg, resume=out, log=log)
    else:
        res = fit(cfg, log=log)
    if res["status"] != "completed":
        raise KeyboardInterrupt  # stopped by a signal: its checkpoint is saved, a rerun resumes it
    return ckpt.read_config(out), time.perf_counter() - t0


# ----------------------------------------------------------------------------- measurements
def _common_share(rows: torch.Tensor) -> torch.Tensor:
    """Per image: the share of the maps' squared deviation from flat that is common to all queries,
    ``1 - |R - mean_q R|^2 / |R - 1/L|^2`` (1: every query the same map; 0: no common part).

    Shape:
        rows: ``[N, Q, L]`` -> ``[N]``.
    """
    r = rows.double()
    flat = r - 1.0 / r.shape[-1]  # [N, Q, L]
    spec = r - r.mean(1, keepdim=True)  # [N, Q, L]
    return 1.0 - spec.square().sum((1, 2)) / flat.square().sum((1, 2)).clamp_min(1e-30)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    """Normalised entropy of the last dim, ``[..., L] -> [...]``."""
    p = p.double()
    return -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(p.shape[-1])


def _peak(p: torch.Tensor) -> torch.Tensor:
    """Peak over a uniform map, ``max / mean`` of the last dim, ``[..., L] -> [...]``."""
    p = p.double()
    return p.amax(-1) / p.mean(-1)


def _flat_cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two maps' deviations from flat, ``[N, L], [N, L] -> [N]``."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-30)


@torch.no_grad()
def _measure(run_dir: Path, *, images: int, figure_dir: Path | None, label: str) -> dict:
    """GCNet's statistics and the map measurements of one trained run (cached in analysis.json)."""
    from ..analysis.capture import capture
    from ..analysis.report import eval_batches
    from ..analysis.stats import query_independence

    model, config = ckpt.load_model(run_dir)
    loader, _spec, n = eval_batches(config, images=images, batch_size=64, seed=0)
    qi = query_independence(model, loader, max_queries=256, seed=0)
    (name, b), = qi.blocks.items()
    res: dict[str, Any] = {"block": name, "kind": b.kind, "shape": list(b.spatial_shape), "images": n}
    res.update({k: v for k, v in b.mean.items()})
    state = ckpt.load_state(run_dir / "last.state.pt")
    res["val_acc"] = float(state["history"][-1]["val_acc"])
    res["train_time_s"] = float(state["train_time_s"])
    ext: dict[str, list[float]] = {}
    first = None
    for x, _ in loader:
        first = x if first is None else first
        with capture(model, queries="all", record_io=False) as rec:
            model(x)
        att = rec.attention(name)  # [N, Q, L] or [N, L]
        if b.kind == "pairwise":
            ext.setdefault("peak", []).extend(_peak(att).mean(1).tolist())
            ext.setdefault("common_share", []).extend(_common_share(att).tolist())
            ext.setdefault("mean_map_entropy", []).extend(_entropy(att.mean(1)).tolist())
            if b.name and hasattr(dict(model.named_modules())[name], "unary_attention"):
                u = rec.unary(name)  # [N, L]
                ext.setdefault("unary_entropy", []).extend(_entropy(u).tolist())
                ext.setdefault("unary_peak", []).extend(_peak(u).tolist())
                ext.setdefault("unary_vs_mean_pairwise_cos", []).extend(_flat_cos(u, att.mean(1)).tolist())
        else:
            ext.setdefault("peak", []).extend(_peak(att).tolist())
    res.update({k: sum(v) / len(v) for k, v in ext.items()})
    module = dict(model.named_modules())[name]
    if getattr(module, "gamma", None) is not None:
        res["gamma"] = float(module.gamma.detach().reshape(-1)[0])
    if figure_dir is not None:
        from ..analysis.plots import plot_attention

        figure_dir.mkdir(parents=True, exist_ok=True)
        with capture(model, queries=3, seed=0, record_io=False) as rec:
            model(first[:6])
        data = config["data"]
        png = figure_dir / f"maps_{label}.png"
        plot_attention(first[:6], rec, name, png, max_images=6, mean=data["mean"], std=data["std"],
                       title=f"{label}: {name}")  # fmt: skip
        res["figure"] = png.name
    return res


def _cached(path: Path, make: Callable[[], dict]) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    value = make()
    ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n"))
    return value


# ----------------------------------------------------------------------------- the study
def run_finding(
    out_dir: str | Path,
    *,
    seeds: Sequence[int] = (0, 1),
    tasks: Sequence[str] = FINDING_TASKS,
    blocks: Sequence[str] = FINDING_BLOCKS,
    settings: dict | None = None,
    images: int = 256,
    threads: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train every (task, block, seed), analyse each run, write ``report.md`` + figures.

    Args:
        out_dir: where the runs (``<task>/<block>/seed<k>/``), the figures and ``report.md`` go.
            Finished runs there are skipped, stopped ones resumed (see the module docstring).
        seeds: training seeds (also the canvas-generation seed of the run). Default: ``(0, 1)``.
        tasks: a subset of :data:`FINDING_TASKS`. Default: both.
        blocks: a subset of :data:`FINDING_BLOCKS`. Default: all four.
        settings: :class:`~globalctx.train.TrainConfig` fields replacing :data:`FINDING_SETTINGS`
            (``subset`` = training canvases, default :data:`TASK_IMAGES` per task).
        images: validation canvases for the statistics. Default: ``256``.
        threads: torch threads per run. Default: torch's choice.
        log: progress lines. Default: stderr.

    Returns:
        the ``finding.json`` dict: ``runs`` (one measurement per run), ``over_training``
        (statistics per snapshot of seed ``min(seeds)``), ``accuracy`` (per task: the
        :func:`~globalctx.compare.stats.summarize` dict, baseline NL when trained), ``wall_s``.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bad = sorted(set(tasks) - set(FINDING_TASKS)) + sorted(set(blocks) - set(FINDING_BLOCKS))
    if bad or not seeds:
        raise ValueError(f"unknown tasks/blocks {bad} or no seeds; valid: {FINDING_TASKS}, {FINDING_BLOCKS}")
    t_start = time.perf_counter()
    runs, overs, train_s = [], {}, 0.0
    first_seed = min(seeds)
    total = len(tasks) * len(blocks) * len(seeds)
    i = 0
    for task in tasks:
        for block in blocks:
            for seed in seeds:
                i += 1
                run_dir = out / task / block / f"seed{seed}"
                cfg = run_spec(task, block, seed, run_dir, settings=settings, threads=threads,
                               snapshots=seed == first_seed)  # fmt: skip
                log(f"[{i}/{total}] {task} {block} seed {seed}")
                _, dt = _train(cfg, log)
                train_s += dt
                label = f"{task}_{block}"
                m = _cached(
                    run_dir / "analysis.json",
                    lambda rd=run_dir, fig=seed == first_seed, lb=label: _measure(
                        rd, images=images, figure_dir=out if fig else None, label=lb
                    ),
                )
                runs.append({**m, "module": m["block"], "task": task, "block": block, "seed": seed})
                if seed == first_seed:
                    overs[label] = _cached(run_dir / "over_training.json", lambda rd=run_dir: _over(rd, images))
    result = {
        "settings": {**FINDING_SETTINGS, **(settings or {})},
        "task_images": dict(TASK_IMAGES),
        "embed_gain": dict(EMBED_GAIN),
        "seeds": list(seeds),
        "runs": runs,
        "over_training": overs,
        "accuracy": _accuracy(runs, tasks, blocks),
        "train_s_this_call": train_s,
        "wall_s_this_call": time.perf_counter() - t_start,
        "threads": threads or torch.get_num_threads(),
    }
    ckpt.atomic_write(out / "finding.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2) + "\n"))
    _figures_over_training(result, out)
    from .finding_report import write_finding_report

    write_finding_report(result, out)
    log(f"wrote {out / 'report.md'}")
    return result


def _over(run_dir: Path, images: int) -> dict:
    from ..analysis.over_training import over_training
    from ..analysis.report import eval_batches

    config = ckpt.read_config(run_dir)
    loader, _, _ = eval_batches(config, images=min(images, 128), batch_size=64, seed=0)
    return over_training(run_dir, loader, max_queries=256).to_dict()


def _figures_over_training(result: dict, out: Path) -> None:
    from ..analysis.over_training import OverTraining, plot_over_training

    for task in {r["task"] for r in result["runs"]}:
        group = {k.split("_", 1)[1]: OverTraining.from_dict(v) for k, v in result["over_training"].items()
                 if k.startswith(task + "_")}  # fmt: skip
        if group:
            plot_over_training(group, out / f"over_training_{task}.png", title=f"{task}: statistics over training")


def _accuracy(runs: list[dict], tasks, blocks) -> dict:
    acc = {}
    for task in tasks:
        results = {b: {r["seed"]: r["val_acc"] for r in runs if r["task"] == task and r["block"] == b} for b in blocks}
        results = {b: v for b, v in results.items() if v}
        if not results:
            continue
        n_test = next(r["images"] for r in runs if r["task"] == task)
        base = "nl" if "nl" in results else next(iter(results))
        s = summarize(results, baseline=base, n_test=None)
        acc[task] = s.to_dict()
        acc[task]["n_test_note"] = f"val_subset={FINDING_SETTINGS['val_subset']} (analysis on {n_test})"
    return acc


def stat_interval(runs: list[dict], task: str, block: str, key: str) -> dict:
    """Mean and 95% Student-t interval over seeds of one measurement."""
    vals = [r[key] for r in runs if r["task"] == task and r["block"] == block and key in r]
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return mean_interval(vals).to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m globalctx.compare.finding", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output directory (runs, figures, report.md); resumable")
    p.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    p.add_argument("--tasks", default=",".join(FINDING_TASKS), help=f"subset of {','.join(FINDING_TASKS)}")
    p.add_argument("--blocks", default=",".join(FINDING_BLOCKS), help=f"subset of {','.join(FINDING_BLOCKS)}")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's choice)")
    a = p.parse_args(argv)
    split = lambda s: [t for t in s.split(",") if t]  # noqa: E731
    try:
        run_finding(a.out, seeds=[int(s) for s in split(a.seeds)], tasks=split(a.tasks), blocks=split(a.blocks),
                    threads=a.threads)  # fmt: skip
    except KeyboardInterrupt:
        print(f"stopped; finished runs are kept, rerun the same command to resume ({a.out})", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
