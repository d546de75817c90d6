"""The comparison report: ``report.md`` assembled from ``(title, markdown)`` sections (settings,
results, curves, context, the attention analysis of :func:`globalctx.analysis.compare_section`,
then any extra sections given), ``results.csv`` and ``curves.png`` (matplotlib is imported only
inside :func:`plot_curves`)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from ..analysis import compare_section

__all__ = [
    "results_table",
    "write_csv",
    "plot_curves",
    "settings_section",
    "curves_section",
    "build_report_sections",
    "write_report",
]

Section = Callable[..., "tuple[str, str] | None"]

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


def build_report_sections(ctx, sections: Sequence[Section] = ()) -> list[tuple[str, str]]:
    """The report as ``(title, markdown)`` pairs: settings, results table, curves, context, the
    attention analysis, then ``fn(ctx)`` of every extra section (``None`` adds nothing). A section
    that raises is replaced by a note naming the error, so the trained results are never lost."""
    from .run import PUBLISHED_NOTE

    out = [
        ("Settings", settings_section(ctx)),
        ("Results", results_table(ctx.rows) + "\n\n" + _result_notes(ctx)),
    ]
    if ctx.figures:
        out.append(("Curves", curves_section(ctx)))
    out.append(("Context", PUBLISHED_NOTE))
    for fn in (compare_section, *sections):
        try:
            sec = fn(ctx)
        except Exception as e:  # a broken section must not lose the trained results
            sec = (getattr(fn, "__name__", "extra section"), f"(this section failed: {type(e).__name__}: {e})")
        if sec is not None:
            out.append(sec)
    return out


def _result_notes(ctx) -> str:
    n = ctx.rows[0].get("val_n") if ctx.rows else None
    notes = [
        f"top-1: accuracy after the last epoch on {n} test images; delta: percentage points vs `none`.",
        "MACs: one 28x28 image, convolutions, matmuls and attention products (globalctx.bench counting). "
        f"latency: median of 20 batch-1 forwards on CPU ({ctx.environment.get('threads')} threads). train time: "
        "the training epochs only (no evaluation), wall clock.",
        f"Total wall time of all training runs: {ctx.wall_time_s / 60:.1f} min.",
    ]
    if ctx.skipped:
        notes.append(f"Not registered (skipped): {', '.join(ctx.skipped)}.")
    return "\n".join(f"- {s}" for s in notes)


def write_report(ctx, sections: Sequence[Section] = ()) -> Path:
    """Write results.csv, curves.png (when matplotlib is available) and report.md into ``ctx.out_dir``."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(ctx.out_dir / "results.csv", ctx.rows)
    try:
        ctx.figures = [p.name for p in plot_curves(ctx.histories, ctx.out_dir)]
    except ImportError:
        ctx.figures = []
    body = [f"# Block comparison ({ctx.started})\n"]
    for title, md in build_report_sections(ctx, sections):
        body.append(f"## {title}\n\n{md.rstrip()}\n")
    path = ctx.out_dir / "report.md"
    path.write_text("\n".join(body))
    return path
