"""Figures of a seeded comparison (matplotlib is an optional extra, imported inside each function).

- :func:`plot_curves` (``curves.png``): training loss and accuracy per epoch, per variant the mean
  over seeds with a band (the 95% Student-t interval of the mean at each epoch; min-max with two
  seeds would say less, and nothing is drawn with one seed).
- :func:`plot_accuracy` (``accuracy.png``): final test top-1 per variant, a bar at the mean with
  95% CI error bars, the seeds as dots, and the baseline's interval shaded across the chart, so a
  bar whose interval overlaps the band is visibly not separated from the baseline by its own
  interval (the paired verdict in the table may still resolve it).
"""

from __future__ import annotations

from pathlib import Path

from .stats import Summary, mean_interval

__all__ = ["plot_curves", "plot_accuracy"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band(values_per_seed: list[list[float]]):
    """Per epoch: mean, low, high over the seeds that reached it."""
    n_ep = max(len(v) for v in values_per_seed)
    ep, mean, low, high = [], [], [], []
    for e in range(n_ep):
        xs = [v[e] for v in values_per_seed if len(v) > e]
        iv = mean_interval(xs)
        ep.append(e + 1)
        mean.append(iv.mean)
        low.append(iv.mean if iv.low is None else iv.low)
        high.append(iv.mean if iv.high is None else iv.high)
    return ep, mean, low, high


def plot_curves(histories: dict[str, dict[int, list[dict]]], labels: dict[str, str], path: Path) -> Path:
    """``histories[variant][seed]`` = the run's per-epoch rows; writes ``path`` (a PNG)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (v, by_seed) in enumerate(histories.items()):
        if not by_seed:
            continue
        for ax, key, scale in ((axes[0], "train_loss", 1.0), (axes[1], "train_acc", 100.0)):
            ep, mean, low, high = _band([[scale * h[key] for h in hist] for hist in by_seed.values()])
            color = f"C{i % 10}"
            ax.plot(ep, mean, marker="o", color=color, label=f"{labels.get(v, v)} (n={len(by_seed)})")
            if len(ep) > 1:
                ax.fill_between(ep, low, high, color=color, alpha=0.2, linewidth=0)
            else:  # one epoch: the band is an error bar
                ax.errorbar(ep, mean, yerr=[[m - lo for m, lo in zip(mean, low)], [h - m for m, h in zip(mean, high)]],
                            color=color, capsize=4)  # fmt: skip
            ax.set_xticks(ep)
    for ax, title in zip(axes, ("train loss", "train accuracy %")):
        ax.set_title(title + " (mean over seeds, 95% CI band)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_accuracy(summary: Summary, path: Path) -> Path:
    """Bars of mean test top-1 (%) with 95% CI error bars, seeds as dots, the baseline's CI shaded."""
    plt = _pyplot()
    vs = list(summary.variants)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.7 * len(vs) + 2), 4.2))
    base = summary.variant(summary.baseline).interval
    if base.low is not None:
        label = summary.variant(summary.baseline).label
        ax.axhspan(base.low, base.high, color="0.5", alpha=0.2, label=f"{label} 95% CI")
    lows, highs = [], []
    for i, v in enumerate(vs):
        iv = v.interval
        err = None if iv.half_width is None else [[iv.half_width], [iv.half_width]]
        ax.bar(i, iv.mean, color=f"C{i % 10}", alpha=0.75)
        ax.errorbar(i, iv.mean, yerr=err, color="k", capsize=4, linewidth=1.2)
        ax.scatter([i] * len(v.values), v.values, color="k", s=10, zorder=3)
        lows.append(min(v.values) if iv.low is None else min(iv.low, *v.values))
        highs.append(max(v.values) if iv.high is None else max(iv.high, *v.values))
    ax.set_xticks(range(len(vs)), [v.label for v in vs], rotation=30 if len(vs) > 4 else 0, ha="right"
                  if len(vs) > 4 else "center", fontsize=8)  # fmt: skip
    span = max(highs) - min(lows)
    ax.set_ylim(max(0.0, min(lows) - 0.15 * span - 0.5), min(100.0, max(highs) + 0.1 * span + 0.5))
    n = max(v.interval.n for v in vs)
    ax.set_title(f"test top-1 % (mean of {n} seed{'s' if n != 1 else ''}, 95% CI; dots: seeds)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if base.low is not None:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
