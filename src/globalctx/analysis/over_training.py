"""The query-independence statistics over training: one row per saved snapshot of a run.

A run trained with ``snapshots=(0, 50, ...)`` (``globalctx train --snapshots 0,50,...``) holds
``snapshots/step-<N>.safetensors``. :func:`over_training` rebuilds the run's model once, loads
each snapshot in turn (safetensors, digest checked; nothing is unpickled or imported), computes
:func:`~globalctx.analysis.query_independence` on the same evaluation batches, and returns the
statistics per step; :func:`plot_over_training` draws cos(att), JSD(att), cos(input) and the
normalised entropy against the step, one line per block, so a reader sees where the maps go from
their initialisation.

Shape legend: ``T`` snapshots, ``B`` analysed blocks.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..train.checkpoint import CheckpointError, build_model, load_weights, read_config, refuse_model_code
from .stats import QueryIndependence, fmt, query_independence

__all__ = ["OverTraining", "list_snapshots", "over_training", "plot_over_training", "OVER_TRAINING_STATS"]

# statistic -> axis label of the figure (the four GCNet-style curves)
OVER_TRAINING_STATS = {
    "att_cos": "cos(att)",
    "att_jsd": "JSD(att)",
    "input_cos": "cos(input)",
    "att_entropy": "H(att) / ln L_k",
}
_STEP = re.compile(r"step-(\d+)\.safetensors$")


def list_snapshots(run_dir) -> list[tuple[int, Path]]:
    """``[(global step, path)]`` of the snapshots of a run, by step."""
    folder = Path(run_dir) / "snapshots"
    found = [(int(m.group(1)), p) for p in folder.glob("step-*.safetensors") if (m := _STEP.search(p.name))]
    return sorted(found)


@dataclass
class OverTraining:
    """Statistics per snapshot: ``steps`` ``[T]`` and one :class:`QueryIndependence` per step."""

    run_dir: str
    steps: list[int] = field(default_factory=list)
    stats: list[QueryIndependence] = field(default_factory=list)

    @property
    def blocks(self) -> list[str]:
        return list(self.stats[0].blocks) if self.stats else []

    def series(self, block: str, key: str) -> list[float]:
        """``[T]`` values of statistic ``key`` of ``block`` (NaN where undefined)."""
        return [s[block].mean.get(key, math.nan) for s in self.stats]

    def to_dict(self) -> dict:
        return {"run_dir": self.run_dir, "steps": self.steps, "stats": [s.to_dict() for s in self.stats]}

    @classmethod
    def from_dict(cls, d: dict) -> OverTraining:
        return cls(d["run_dir"], [int(s) for s in d["steps"]], [QueryIndependence.from_dict(s) for s in d["stats"]])

    def to_markdown(self) -> str:
        """One table per block: a row per step, the four statistics and cos(att - mean)."""
        keys = {**OVER_TRAINING_STATS, "att_cos_centred": "cos(att - mean)"}
        parts = []
        for block in self.blocks:
            kind = self.stats[0][block].kind
            parts += [f"`{block}` ({kind})", "", "| step | " + " | ".join(keys.values()) + " |"]
            parts.append("|---|" + "---|" * len(keys))
            for step, s in zip(self.steps, self.stats):
                cells = [fmt(s[block].mean.get(k, math.nan)) for k in keys]
                parts.append(f"| {step} | " + " | ".join(cells) + " |")
            parts.append("")
        return "\n".join(parts)


def over_training(
    run_dir,
    loader: Iterable,
    *,
    max_queries: int = 256,
    seed: int = 0,
    blocks: Sequence[str] | None = None,
    device=None,
    trust_model_code: bool = False,
) -> OverTraining:
    """:func:`~globalctx.analysis.query_independence` of every snapshot of the run in ``run_dir``.

    Args:
        run_dir: a run directory with ``config.json`` and ``snapshots/step-*.safetensors``.
        loader: re-iterable evaluation batches (the same images for every snapshot).
        max_queries, seed, blocks, device: as :func:`~globalctx.analysis.query_independence`.
        trust_model_code: accept a config naming its model as an import path (see
            :func:`~globalctx.train.checkpoint.load_model`). Default: ``False``.

    Returns:
        :class:`OverTraining`. A run without snapshots raises ``CheckpointError`` naming the flag.
    """
    run_dir = Path(run_dir)
    snaps = list_snapshots(run_dir)
    if not snaps:
        raise CheckpointError(
            f"{run_dir} has no snapshots/step-*.safetensors; train it with --snapshots 0,50,... to analyse it over "
            "training"
        )
    config = read_config(run_dir)
    if not trust_model_code:
        refuse_model_code(config["model"], run_dir / "config.json")
    model: nn.Module = build_model(config["model"])
    if device is not None:
        model.to(device)
    result = OverTraining(str(run_dir))
    for step, path in snaps:
        load_weights(model, path)
        model.eval()
        qi = query_independence(model, loader, max_queries=max_queries, seed=seed, blocks=blocks, device=device)
        result.steps.append(step)
        result.stats.append(qi)
    return result


def plot_over_training(runs: OverTraining | dict[str, OverTraining], path=None, *, title: str | None = None):
    """Four panels (cos(att), JSD(att), cos(input), entropy) against the step; one line per
    ``label: block``. ``runs`` is one :class:`OverTraining` or ``{label: OverTraining}``. GC/SNL
    blocks (one shared map) appear in the input and entropy panels only. Returns the figure;
    saves a PNG when ``path``."""
    from .plots import require_matplotlib

    Figure = require_matplotlib()
    groups = {"": runs} if isinstance(runs, OverTraining) else dict(runs)
    fig = Figure(figsize=(12, 3.2))
    axes = fig.subplots(1, len(OVER_TRAINING_STATS))
    for ax, (key, label) in zip(axes, OVER_TRAINING_STATS.items()):
        for name, ot in groups.items():
            for block in ot.blocks:
                if key.startswith("att_") and key != "att_entropy" and ot.stats[0][block].kind != "pairwise":
                    continue
                tag = f"{name}: {block}" if name else block
                ax.plot(ot.steps, ot.series(block, key), marker="o", ms=3, label=tag)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[-1].set_ylim(0, 1.02)
    handles, labels = axes[-1].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.1 + 0.04 * ((len(labels) - 1) // 4), 1, 0.95 if title else 1))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def write_over_training(ot: OverTraining, out_dir, *, title: str) -> Path:
    """``over_training.json``, ``over_training.png`` and ``over_training.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "over_training.json").write_text(json.dumps(ot.to_dict(), indent=2, sort_keys=True) + "\n")
    plot_over_training(ot, out / "over_training.png", title=title)
    md = [f"# Over training: {title}", "", f"Snapshots at steps {', '.join(map(str, ot.steps))}.", ""]
    md += ["![statistics over training](over_training.png)", "", ot.to_markdown()]
    path = out / "over_training.md"
    path.write_text("\n".join(md) + "\n")
    return path
