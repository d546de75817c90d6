"""Figures: GCNet Figure 1 style attention maps, and a bar chart of the statistics.

matplotlib is imported inside the functions (optional dependency, extra ``viz``); figures are
built on a bare ``matplotlib.figure.Figure`` (no pyplot, no global backend change).

Shape legend: ``N`` images, ``C`` image channels (1 or 3), ``H, W`` image size, ``Q`` queries,
``L_k`` key positions with spatial shape ``(h_k, w_k)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from .capture import PAIRWISE, Recording
from .stats import STATISTICS, QueryIndependence, fmt

__all__ = ["plot_attention", "plot_statistics", "display_images", "upsample_map", "peak_ratio"]

_QUERY_COLOURS = ["#ff1f1f", "#1fff3f", "#1f9fff", "#ffdf1f", "#ff3fff", "#3fffff", "#ff8f1f", "#ffffff"]


def require_matplotlib():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("figures need matplotlib: pip install 'globalctx[viz]'") from e
    return Figure


def display_images(images: torch.Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """Images ``[N, C, H, W]`` (or ``[N, H, W]``) -> ``[N, H, W, C]`` floats in ``[0, 1]`` for display.

    Undoes ``(x - mean) / std`` when given, then scales each image to its own min-max range.
    """
    x = images.detach().float().cpu()
    if x.dim() == 3:
        x = x[:, None]  # [N, 1, H, W]
    if x.dim() != 4:
        raise ValueError(f"images must be [N, C, H, W] or [N, H, W], got shape {list(images.shape)}")
    if std is not None:
        x = x * torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    if mean is not None:
        x = x + torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    lo = x.flatten(1).min(1).values.view(-1, 1, 1, 1)
    hi = x.flatten(1).max(1).values.view(-1, 1, 1, 1)
    x = (x - lo) / (hi - lo).clamp_min(1e-12)
    return x.permute(0, 2, 3, 1)  # [N, H, W, C]


def upsample_map(
    values: torch.Tensor, shape: Sequence[int], size: Sequence[int], *, scale: str = "minmax"
) -> torch.Tensor:
    """Maps ``[M, L_k]`` on a 2-D grid ``shape`` -> ``[M, H, W]`` (bilinear), each scaled to ``[0, 1]``.

    ``scale='minmax'`` stretches each map's own range (shows where a map puts *more* weight, even
    when it is almost flat, as GCNet's figure); ``'max'`` divides by the maximum (a flat map stays
    flat). Signed maps (dot product) are shifted to ``>= 0`` first under ``'max'``.
    """
    if len(shape) != 2:
        raise ValueError(f"attention figures need 2-D maps, got key shape {tuple(shape)}")
    if scale not in ("minmax", "max"):
        raise ValueError(f"scale must be 'minmax' or 'max', got {scale!r}")
    m = values.detach().float().cpu().reshape(-1, 1, *shape)  # [M, 1, h_k, w_k]
    m = F.interpolate(m, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]  # [M, H, W]
    lo = m.flatten(1).min(1).values.view(-1, 1, 1)
    if scale == "max":
        lo = lo.clamp_max(0)
    m = m - lo
    return m / m.flatten(1).max(1).values.view(-1, 1, 1).clamp_min(1e-12)


def peak_ratio(values: torch.Tensor) -> torch.Tensor:
    """``max_k v_k / mean_k v_k`` per map ``[M, L_k] -> [M]``: 1 for a uniform map, ``L_k`` for one-hot."""
    v = values.detach().double().cpu()
    return v.max(-1).values / v.mean(-1).clamp_min(1e-300)


def _query_pixels(coords: torch.Tensor, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Grid coordinates ``[Q, 2]`` (row, col) on ``grid`` -> pixel centres ``[Q, 2]`` (y, x)."""
    scale = torch.tensor([size[0] / grid[0], size[1] / grid[1]], dtype=torch.float64)
    return (coords.double() + 0.5) * scale - 0.5


def _show(ax, img) -> None:
    if img.shape[-1] == 1:
        ax.imshow(img[..., 0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img.numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def plot_attention(
    images: torch.Tensor,
    rec: Recording,
    block: str,
    path=None,
    *,
    max_images: int = 6,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    cmap: str = "jet",
    alpha: float = 0.5,
    scale: str = "minmax",
    title: str | None = None,
    panel_inches: float = 1.7,
    dpi: int = 110,
):
    """GCNet Figure 1: each image with its query points, and each query's attention map on it.

    One row per image (at most ``max_images``): the image with the query points (coloured
    dots), then, for an NL/DNL block, one panel per query with that query's attention row
    upsampled (bilinear) to the image and overlaid, and for DNL a last panel with the unary map;
    for a GC/SNL block one panel with the shared map. Each map is scaled to ``[0, 1]`` for
    display (``scale``); the label under each panel gives its peak relative to a uniform map (``max / mean``:
    ``1x`` = uniform, ``L_k x`` = all weight on one position), so a stretched, almost flat map is not
    mistaken for a focused one.

    Args:
        images: the batch given to the model inside ``capture``, ``[N, C, H, W]`` (C = 1 or 3).
        rec: the :class:`~globalctx.analysis.Recording`.
        block: a recorded block name.
        path: save a PNG there when given.
        max_images: rows. Default: ``6`` (as GCNet's figure).
        mean, std: per-channel normalisation to undo for display. Default: none.
        cmap, alpha: heatmap colour map and opacity. Defaults: ``'jet'``, ``0.5``.
        scale: ``'minmax'`` (each map's own range, as GCNet's figure) or ``'max'`` (divide by the
            maximum: flat maps stay flat); see :func:`upsample_map`. Default: ``'minmax'``.
        title: figure title. Default: the block name and its kind.
        panel_inches, dpi: panel size and PNG resolution. Defaults: ``1.7``, ``110``.

    Returns:
        the ``matplotlib.figure.Figure``.
    """
    Figure = require_matplotlib()
    att = rec.attention(block)
    kind = rec.kind(block)
    n = min(int(max_images), images.shape[0], att.shape[0])
    if n < 1:
        raise ValueError("plot_attention: no images to show")
    imgs = display_images(images[:n], mean, std)  # [n, H, W, C]
    H, W = imgs.shape[1], imgs.shape[2]
    if kind == PAIRWISE:
        q = att.shape[1]
        raw = [att[:n, k] for k in range(q)]  # Q x [n, L_k]
        labels = [f"query {k + 1}" for k in range(q)]
        try:
            raw.append(rec.unary(block)[:n])
            labels.append("unary")
        except ValueError:
            pass
        qpix = _query_pixels(rec.query_coords(block), rec.spatial_shape(block), (H, W))  # [Q, 2]
    else:
        q = 0
        raw = [att[:n]]
        labels = ["shared map"]
        qpix = torch.zeros(0, 2)
    maps = [upsample_map(r, rec.key_shape(block), (H, W), scale=scale) for r in raw]  # [n, H, W] each
    peaks = [peak_ratio(r) for r in raw]  # [n] each
    cols = 1 + len(maps)
    fig = Figure(figsize=(panel_inches * cols, panel_inches * n + 0.5), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    marker = dict(s=40, edgecolors="black", linewidths=0.8, zorder=3)
    for i in range(n):
        _show(axes[i, 0], imgs[i])
        for k in range(q):
            y, x = qpix[k].tolist()
            axes[i, 0].scatter([x], [y], c=_QUERY_COLOURS[k % len(_QUERY_COLOURS)], **marker)
        for j, m in enumerate(maps):
            ax = axes[i, j + 1]
            _show(ax, imgs[i].mean(-1, keepdim=True))
            ax.imshow(m[i].numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
            ax.set_xlabel(f"peak {peaks[j][i].item():.3g}x uniform", fontsize=7, labelpad=1)
            if j < q:
                y, x = qpix[j].tolist()
                ax.scatter([x], [y], c=_QUERY_COLOURS[j % len(_QUERY_COLOURS)], **marker)
            if i == 0:
                ax.set_title(labels[j], fontsize=9)
        if i == 0:
            axes[i, 0].set_title("image + queries" if q else "image", fontsize=9)
    import textwrap

    heading = title if title is not None else f"{block} ({'per-query maps' if q else 'one shared map'})"
    fig.suptitle(textwrap.fill(heading, width=max(30, int(11 * panel_inches * cols))), fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig


def plot_statistics(
    stats: QueryIndependence | Mapping[str, QueryIndependence],
    path=None,
    *,
    title: str | None = "Query-independence statistics (GCNet Table 1)",
):
    """Bar chart: per block, the mean cosine distance of inputs, outputs and attention maps and the
    JSD of the attention maps, with the std over images as error bars (linear axis).

    ``stats`` is one :class:`~globalctx.analysis.QueryIndependence` or a mapping
    ``{variant label: QueryIndependence}`` (blocks labelled ``variant: block``). GC/SNL blocks
    have one shared map, so their attention bars are 0 by construction; undefined values (NaN)
    are marked ``n/a``. Each bar is labelled with its value; when the values span more than two
    decades the axis is logarithmic (no error bars then). Returns the ``matplotlib.figure.Figure``;
    saves a PNG when ``path``.
    """
    Figure = require_matplotlib()
    groups = {"": stats} if isinstance(stats, QueryIndependence) else dict(stats)
    entries = []
    for label, qi in groups.items():
        for b in qi:
            entries.append((f"{label}: {b.name}" if label else b.name, b))
    if not entries:
        raise ValueError("plot_statistics: no blocks")
    keys = list(STATISTICS)
    width = 0.8 / len(keys)
    fig = Figure(figsize=(max(5.0, 1.4 * len(entries) + 2.0), 4.0), layout="constrained")
    ax = fig.subplots()
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]
    values = [b.mean[k] for _, b in entries for k in keys if not math.isnan(b.mean[k])]
    positive = [v for v in values if v > 0]
    # tiny attention distances next to large input distances: a log axis shows both
    log = bool(positive) and max(positive) / min(positive) > 100
    floor = min(positive) / 3 if log else 0.0
    top = max(values + [0.05])
    for j, key in enumerate(keys):
        for i, (_, b) in enumerate(entries):
            x = i + (j - (len(keys) - 1) / 2) * width
            m, s = b.mean[key], b.std[key]
            label = STATISTICS[key] if i == 0 else None
            if math.isnan(m):
                ax.bar([x], [0], width, color=colours[j], label=label)
                ax.text(x, floor if log else 0, " n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            shown = max(m, floor) if log else m
            err = None if (log or math.isnan(s)) else [s]
            ax.bar([x], [shown - floor], width, bottom=floor, yerr=err, capsize=2, color=colours[j], label=label)
            note = "0 (shared)" if b.kind != PAIRWISE and key.startswith("att") else fmt(m)
            ax.text(x, shown, " " + note, ha="center", va="bottom", fontsize=6.5, rotation=90)
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels([f"{name}\n({b.kind})" for name, b in entries], fontsize=8)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor, top * 30)
        ax.set_ylabel("mean distance over position pairs (log)")
    else:
        ax.set_ylim(0, top * 1.45)
        ax.set_ylabel("mean distance over position pairs")
    ax.legend(fontsize=8, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
