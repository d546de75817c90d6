"""The plan of a seeded comparison: one training run per (variant, seed), its directory, its config,
and whether it is already finished.

A comparison directory holds ``compare.json`` (the manifest: the shared training settings, the
variants and the seeds) and one run directory per (variant, seed), ``<variant-slug>/seed<k>/``.
A run counts as *finished* only when its ``config.json`` matches the config this comparison
would give it and its checkpoint (``last.state.pt``) has every epoch done and a final evaluation;
a directory that merely exists proves nothing. A run with a matching config and an unfinished
checkpoint is *partial* (continued exactly with :func:`globalctx.train.loop.fit` ``resume=``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..train import checkpoint as ckpt
from ..train.checkpoint import CheckpointError
from ..train.config import TrainConfig
from .variants import BASELINE, format_variant, parse_variant

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "IGNORED_KEYS",
    "PlannedRun",
    "run_dir_name",
    "variant_attn",
    "plan_runs",
    "run_status",
    "finished_state",
    "comparable",
    "config_differences",
    "read_manifest",
    "write_manifest",
]

MANIFEST = "compare.json"
MANIFEST_FORMAT = "globalctx-compare/1"
# config fields that do not change what a run computes (or that a comparison sets per run):
# they are left out when deciding whether a run or a comparison directory is "this one"
IGNORED_KEYS = ("out", "seed", "attn", "progress", "tensorboard", "workers", "data_dir", "dist_timeout", "max_steps",
                "device", "threads")  # fmt: skip


@dataclass(frozen=True)
class PlannedRun:
    """One (variant, seed) of the comparison: its canonical spec, directory and training config."""

    variant: str
    seed: int
    run_dir: Path
    config: TrainConfig


def run_dir_name(variant: str) -> str:
    """A stable, filesystem-safe directory name for a canonical spec: the spec itself when it is a
    plain word (``none``, ``gc``), else a slug plus 6 hex digits of its hash
    (``gc-rd_ratio-1_4-stages-3-7a1f3c``)."""
    if re.fullmatch(r"[a-z0-9_]+", variant):
        return variant
    slug = re.sub(r"[^a-z0-9_]+", "-", variant.lower()).strip("-")[:48]
    return f"{slug}-{hashlib.sha1(variant.encode()).hexdigest()[:6]}"


def _json(v):
    """``v`` as it reads back from a JSON file (tuples become lists, int keys strings)."""
    return json.loads(json.dumps(v))


def variant_attn(variant: str) -> list[dict] | None:
    """The ``attn`` of a variant's TrainConfig: its placements as JSON dicts (``None`` for the
    baseline), so the run's config.json names the blocks and placements in full."""
    placements = parse_variant(variant)
    return _json([p.to_dict() for p in placements]) if placements else None


def plan_runs(base: TrainConfig, variants: list[str], seeds: list[int], out: Path) -> list[PlannedRun]:
    """Every (variant, seed), seed-major (all variants of the first seed, then the next seed), so
    a comparison stopped part-way has whole seeds first."""
    out = Path(out)
    runs = []
    for seed in seeds:
        for v in variants:
            d = out / run_dir_name(v) / f"seed{seed}"
            runs.append(PlannedRun(v, seed, d, base.replace(attn=variant_attn(v), seed=seed, out=str(d))))
    return runs


def comparable(train: dict) -> dict:
    """The part of a training config (as a dict) that decides what a run computes."""
    return {k: v for k, v in _json(train).items() if k not in IGNORED_KEYS}


def config_differences(expected: dict, found: dict) -> list[str]:
    """``["epochs=4 (found 2)", ...]`` between two configs' :func:`comparable` parts."""
    a, b = comparable(expected), comparable(found)
    return [f"{k}={a.get(k)!r} (found {b.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def finished_state(run: PlannedRun) -> dict | None:
    """The saved training state of a finished run, else ``None``."""
    d = run.run_dir
    if not (d / "last.state.pt").is_file() or not (d / "last.safetensors").is_file():
        return None
    try:
        state = ckpt.load_state(d / "last.state.pt")
    except CheckpointError:
        return None
    hist = state.get("history") or []
    done = int(state.get("epoch", 0)) == run.config.epochs and int(state.get("step", 0)) == 0
    return state if done and hist and "val_acc" in hist[-1] else None


def run_status(run: PlannedRun) -> tuple[str, str]:
    """``(status, why)``: ``"finished"``, ``"partial"`` (matching config, checkpoint not done),
    ``"missing"`` (no run files), or ``"other"`` (files of another run or none of a run)."""
    d = run.run_dir
    if not d.is_dir() or not any(d.iterdir()):
        return "missing", ""
    try:
        saved = ckpt.read_config(d)
    except CheckpointError as e:
        return "other", str(e)
    train = saved.get("train", {})
    diff = [] if train.get("seed") == run.seed else [f"seed={run.seed} (found {train.get('seed')!r})"]
    diff += config_differences(run.config.to_dict(), train)
    if _json(train.get("attn")) != _json(run.config.attn):
        diff.append(f"attn of {run.variant!r} differs from the saved one")
    if diff:
        return "other", "; ".join(diff)
    return ("finished", "") if finished_state(run) is not None else ("partial", "")


def read_manifest(out: Path) -> dict | None:
    """The manifest of comparison directory ``out`` (``None`` when there is none)."""
    p = Path(out) / MANIFEST
    if not p.is_file():
        return None
    try:
        m = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p} is not valid JSON ({e}); move it away or choose another --out") from None
    if not isinstance(m, dict) or m.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{p} is not a globalctx comparison manifest (format {m.get('format')!r})")
    for v in m.get("variants", []):
        if format_variant(v) != v and v != BASELINE:
            raise ValueError(f"{p}: variant {v!r} is not in canonical form")
    return m


def write_manifest(out: Path, base: TrainConfig, variants: list[str], seeds: list[int], preset: str | None) -> Path:
    """Write ``compare.json`` atomically (the shared settings, variants, seeds, preset)."""
    m = {"format": MANIFEST_FORMAT, "base": _json(base.to_dict()), "variants": list(variants),
         "seeds": list(seeds), "preset": preset}  # fmt: skip
    text = json.dumps(m, indent=2, sort_keys=True) + "\n"
    return ckpt.atomic_write(Path(out) / MANIFEST, lambda tmp: Path(tmp).write_text(text))
