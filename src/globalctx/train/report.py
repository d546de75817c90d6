"""Tables, CSV and curves for ``compare`` (matplotlib is imported only inside :func:`plot_curves`)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

__all__ = ["results_table", "write_csv", "plot_curves", "settings_section", "curves_section"]

_COLUMNS = [
    ("variant", "variant", "{}"),
    ("top1", "top-1 %", "{:.2f}"),
    ("delta_pp", "delta pp", "{:+.2f}"),
    ("params", "params", "{:,}"),
    ("macs_m", "MMACs", "{:.2f}"),
    ("latency_ms", "CPU latency ms", "{:.2f}"),
    ("train_time_s", "train time s", "{:.0f}"),
    ("train_acc", "train acc %", "{:.2f}"),
]
_PERCENT = {"top1", "train_acc"}


def _cell(row: dict, key: str, fmt: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    return fmt.format(100 * v if key in _PERCENT else v)


def results_table(rows: list[dict]) -> str:
    """A markdown table of the compare rows."""
    head = "| " + " | ".join(t for _, t, _ in _COLUMNS) + " |"
    sep = "|" + "|".join("---" if k == "variant" else "---:" for k, _, _ in _COLUMNS) + "|"
    body = ["| " + " | ".join(_cell(r, k, f) for k, _, f in _COLUMNS) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def write_csv(path: Path, rows: list[dict]) -> Path:
    if rows:
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return path


def plot_curves(histories: dict[str, list[dict]], out_dir: Path) -> list[Path]:
    """``curves.png``: train loss, train accuracy and validation accuracy per epoch, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    vals = {v: [(h["epoch"], 100 * h["val_acc"]) for h in hist if "val_acc" in h] for v, hist in histories.items()}
    final_only = all(len(p) <= 1 for p in vals.values())  # evaluated once: a bar per variant
    for i, (v, hist) in enumerate(histories.items()):
        ep = [h["epoch"] for h in hist]
        axes[0].plot(ep, [h["train_loss"] for h in hist], marker="o", label=v)
        axes[1].plot(ep, [100 * h["train_acc"] for h in hist], marker="o", label=v)
        if vals[v] and final_only:
            axes[2].bar(i, vals[v][0][1], color=f"C{i}")
            axes[2].text(i, vals[v][0][1], f"{vals[v][0][1]:.1f}", ha="center", va="bottom", fontsize=8)
        elif vals[v]:
            axes[2].plot(*zip(*vals[v]), marker="o", label=v)
    titles = (
        "train loss",
        "train accuracy %",
        "test accuracy % (after the last epoch)" if final_only else "test accuracy %",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.grid(alpha=0.3)
    for ax in axes[:2] if final_only else axes:
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
    if final_only:
        axes[2].set_xticks(range(len(histories)), list(histories))
        lo = min((p[0][1] for p in vals.values() if p), default=0)
        axes[2].set_ylim(max(0, lo - 5), None)
    axes[0].legend()
    fig.tight_layout()
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


def settings_section(ctx) -> str:
    cfg = ctx.base
    env = ctx.environment
    lines = [
        f"- model: `{cfg.model}` with {json.dumps(cfg.model_kwargs)}, one block per variant (`attn`), "
        "same seed, same data order and augmentation for every variant",
        f"- data: `{cfg.data}`, training subset: {cfg.subset or 'all'} images (class-balanced), "
        f"test: {cfg.val_subset or 'all'} images",
        f"- schedule: {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.opt} lr {cfg.lr} ({cfg.sched}, warm-up "
        f"{cfg.warmup_epochs} epochs), weight decay {cfg.weight_decay} (not on norms/biases/no_weight_decay)",
        f"- seed {cfg.seed}; torch {env.get('torch')}, {env.get('cores')} cores, {env.get('threads')} threads",
        f"- variants: {', '.join(ctx.variants)}; run directories: "
        + ", ".join(f"`{Path(p).name}/`" for p in ctx.run_dirs.values()),
    ]
    return "\n".join(lines)


def curves_section(ctx) -> str:
    return "\n".join(f"![{f}]({f})" for f in ctx.figures)
