"""The markdown analysis section: statistics table, GCNet's reading next to ours, figures.

Used by ``globalctx analyze`` and by ``globalctx compare`` for its NL/DNL/GC variants.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..train.checkpoint import CheckpointError, load_model, read_config
from .capture import PAIRWISE, capture, find_blocks
from .stats import QueryIndependence, fmt, images_of, iter_batches, model_device, query_independence

__all__ = [
    "report_section",
    "compare_section",
    "analyse",
    "eval_batches",
    "load_source",
    "gcnet_reading",
    "FAR_MORE_ALIKE",
]

# "far more alike": the attention maps' mean cosine distance is below this fraction of the inputs'
FAR_MORE_ALIKE = 0.5
# normalised row entropy above which maps count as nearly uniform (caveat in the reading)
UNIFORM_ENTROPY = 0.98

DEFINITIONS = (
    "Query-independence statistics (GCNet Table 1) over {nimg} images: mean over all ordered "
    "pairs of positions (self-pairs included) of the cosine distance (1 - cos)/2 of block "
    "inputs x_i, block outputs before fusion z_i - x_i and attention maps of query i, and "
    "the Jensen-Shannon divergence (nats) of the attention maps; mean (std over images). "
    "Not in GCNet's table: H(att) / ln L_k, the mean entropy of the attention rows relative to a "
    "uniform map (1 = uniform), and cos(att - mean), the cosine statistic of the rows minus their "
    "mean (do the maps' deviations from flat point to the same positions?). "
    "Attention statistics are exact when queries = positions, otherwise estimated from a seeded "
    "sample of {max_queries} query positions per batch (seed {seed})."
)

GCNET_READING = (
    "GCNet (Cao et al., 2019, §2.2, Table 1) found for NL blocks trained on COCO that the "
    "attention maps of different query positions are almost the same: their cosine distance "
    "and JSD are far smaller than the cosine distance between the inputs at those positions, "
    'and the outputs before fusion (z - x) are almost the same for all positions ("the values '
    "of cosine distance in 'output' are quite small\")."
)


def _config_model(run_dir) -> str | None:
    try:
        return read_config(run_dir)["model"].get("name")
    except (CheckpointError, AttributeError):
        return None


def load_source(source, *, trust_model_code: bool = False) -> tuple[nn.Module, dict]:
    """A model, or a run dir / checkpoint path loaded with ``globalctx.train.checkpoint.load_model``
    (``trust_model_code`` as there: a file naming its model as ``package.module:callable`` is
    refused unless it is ``True``)."""
    if isinstance(source, nn.Module):
        return source, {}
    path = Path(source)
    if not path.exists():
        raise ValueError(f"no such run directory or checkpoint: {str(path)!r}")
    model, config = load_model(path, trust_model_code=trust_model_code)
    return model, dict(config or {})


def gcnet_reading(stats: QueryIndependence, *, ratio: float = FAR_MORE_ALIKE) -> list[str]:
    """One sentence per pairwise block: does it reproduce GCNet's finding, with the numbers.

    Criterion (stated in the text): ``cos(att) < ratio * cos(input)`` ("far more alike"),
    ``ratio`` = :data:`FAR_MORE_ALIKE` by default. A block whose maps are nearly uniform (mean
    normalised entropy above :data:`UNIFORM_ENTROPY`) is reported as *not tested*: flat maps are
    alike by construction, whatever the block would learn.
    """
    lines = []
    for b in stats:
        if b.kind != PAIRWISE:
            continue
        ci, co, ca, js, ent, cc = (
            b.mean.get(k, math.nan)
            for k in ("input_cos", "output_cos", "att_cos", "att_jsd", "att_entropy", "att_cos_centred")
        )
        if math.isnan(ci) or math.isnan(ca):
            lines.append(f"`{b.name}`: undefined statistics (cos(input) {fmt(ci)}, cos(att) {fmt(ca)}).")
            continue
        rel = ca / ci if ci > 0 else math.inf
        out_txt = "n/a (zero output)" if math.isnan(co) else fmt(co)
        js_txt = "n/a (signed rows)" if math.isnan(js) else f"{fmt(js)} (max ln 2 = 0.6931)"
        numbers = (
            f"cos(att) = {fmt(ca)} is {rel:.2g} x cos(input) = {fmt(ci)} (criterion: < {ratio:g} x); "
            f"cos(output) = {out_txt}; JSD(att) = {js_txt}"
        )
        if not math.isnan(ent) and ent > UNIFORM_ENTROPY:
            # maps that never left a flat map are alike by construction: the statistic tests nothing
            text = (
                f"`{b.name}` does not test the finding (not tested): its maps are nearly uniform "
                f"(normalised entropy {ent:.3f} > {UNIFORM_ENTROPY}), so they are alike because they are all "
                f"close to flat, not because one learned map serves every query; {numbers}"
            )
            if not math.isnan(cc):
                text += (
                    f"; their deviations from flat have cosine distance {fmt(cc)} "
                    f"({'more' if cc > ci else 'less'} query-dependent than the inputs' {fmt(ci)})"
                )
            text += (
                ". To test it, train until the maps leave uniform (globalctx compare --preset gcnet-finding "
                "does, with an embedding init that lets them)."
            )
        else:
            verdict = "reproduces" if rel < ratio else "does not reproduce"
            text = f"`{b.name}` {verdict} the finding: {numbers}."
        lines.append(text)
    return lines


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


@torch.no_grad()
def analyse(
    model: nn.Module,
    loader: Iterable,
    *,
    out_dir=None,
    title: str = "model",
    prefix: str = "",
    max_batches: int | None = 8,
    max_queries: int = 256,
    queries=3,
    images: int = 6,
    seed: int = 0,
    blocks: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    heading_level: int = 2,
    device=None,
    definitions: bool = True,
    gcnet_text: bool = True,
    stats_figure: bool = True,
    max_figures: int | None = None,
) -> tuple[str, QueryIndependence | None]:
    """:func:`report_section` on a model, also returning the statistics (``None`` without blocks).

    ``definitions`` / ``gcnet_text`` / ``stats_figure``: include the paragraph defining the
    statistics, GCNet's reading and the per-model bar chart (a report comparing several models
    states them once). ``max_figures``: attention figures for at most this many blocks, the
    deepest ones (default all).
    """
    h = "#" * max(1, int(heading_level))
    if not find_blocks(model):
        return f"{h} Analysis: {title}\n\nNo NL/DNL/GC/SNL attention blocks in this model: nothing to analyse.\n", None
    device = torch.device(device) if device is not None else model_device(model)
    stats = query_independence(
        model,
        loader,
        max_queries=max_queries,
        seed=seed,
        max_batches=max_batches,
        blocks=blocks,
        device=device,
    )
    nimg = max(b.images for b in stats)
    parts = ["", f"{h} Analysis: {title}", ""]
    if definitions:
        parts += [DEFINITIONS.format(nimg=nimg, max_queries=max_queries, seed=seed), ""]
    parts += [stats.to_markdown(), ""]
    if gcnet_text:
        parts += [f"**GCNet's reading.** {GCNET_READING}", ""]
    reading = gcnet_reading(stats)
    if reading:
        parts += ["**Here.** " + " ".join(reading), ""]
    else:
        parts += [
            "**Here.** Only GC/SNL blocks (one attention map shared by all queries, so their attention "
            "distances are 0 by construction); the input/output distances are reported above.",
            "",
        ]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        from .plots import plot_attention, plot_statistics

        first = images_of(next(iter(iter_batches(loader))))[:images]
        was_training = model.training
        model.eval()
        try:
            with capture(model, queries=queries, blocks=blocks, seed=seed, record_io=False) as rec:
                model(first.to(device))
        finally:
            model.train(was_training)
        if stats_figure:
            stats_png = f"{prefix}stats.png"
            plot_statistics(stats, out / stats_png, title=f"Query-independence statistics: {title}")
            parts += [f"![statistics per block]({stats_png})", ""]
        drawable = [b for b in rec.blocks if len(rec.spatial_shape(b)) == 2]
        if max_figures is not None:
            drawable = drawable[len(drawable) - max_figures :] if max_figures > 0 else []
        for block in drawable:
            png = f"{prefix}attention_{_slug(block)}.png"
            plot_attention(first, rec, block, out / png, max_images=images, mean=mean, std=std)
            parts += [f"![attention maps of {block}]({png})", ""]
    return "\n".join(parts), stats


@torch.no_grad()
def report_section(
    source,
    loader: Iterable,
    *,
    out_dir=None,
    name: str | None = None,
    max_batches: int | None = 8,
    max_queries: int = 256,
    queries=3,
    images: int = 6,
    seed: int = 0,
    blocks: Sequence[str] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    heading_level: int = 2,
    device=None,
    trust_model_code: bool = False,
) -> str:
    """Analyse one model and return a markdown section (statistics, reading, figures).

    Args:
        source: an ``nn.Module``, or a run directory / ``.safetensors`` checkpoint (loaded with
            ``globalctx.train.checkpoint.load_model``).
        loader: re-iterable batches (a ``DataLoader`` or a list) of images or
            ``(images, labels)``; the first batch also feeds the figures.
        out_dir: where to write PNGs (``attention_<block>.png`` per block, ``stats.png``,
            prefixed by ``name`` when given); no figures when ``None``. Links in the markdown are
            relative to ``out_dir``.
        name: label of the model (section title, file prefix). Default: ``'model'``.
        max_batches: batches used for the statistics. Default: ``8``.
        max_queries: exact attention statistics up to this many positions, sampled above
            (see :mod:`globalctx.analysis.stats`). Default: ``256``.
        queries: query points per figure (see :func:`~globalctx.analysis.capture`). Default: ``3``.
        images: rows per attention figure. Default: ``6``.
        seed: seed for query sampling. Default: ``0``.
        blocks: restrict to these blocks. Default: all NL/DNL/GC/SNL blocks.
        mean, std: image normalisation to undo in figures. Default: none (min-max display).
        heading_level: markdown level of the section title. Default: ``2``.
        device: where to run. Default: the model's device.
        trust_model_code: load a checkpoint whose config names its model as an import path
            (see :func:`~globalctx.train.checkpoint.load_model`). Default: ``False``.

    Returns:
        markdown text. A model without attention blocks gets a one-line section saying so.
    """
    model, _config = load_source(source, trust_model_code=trust_model_code)
    md, _ = analyse(
        model,
        loader,
        out_dir=out_dir,
        title=name or "model",
        prefix=f"{_slug(name)}_" if name else "",
        max_batches=max_batches,
        max_queries=max_queries,
        queries=queries,
        images=images,
        seed=seed,
        blocks=blocks,
        mean=mean,
        std=std,
        heading_level=heading_level,
        device=device,
    )
    return md


class _EvalBatches:
    """Re-iterable normalised ``(x, y)`` batches of a dataset (the trainer's evaluation loader)."""

    def __init__(self, dataset, mean, std, batch_size: int):
        from ..train.data import Augment, BatchLoader

        self.loader = BatchLoader(dataset, Augment(mean, std), global_batch=batch_size, train=False)

    def __iter__(self):
        for _, x, y in self.loader.iter_epoch(0):
            yield x, y

    def __len__(self) -> int:
        return len(self.loader)


def eval_batches(
    config: dict,
    *,
    data: str | None = None,
    data_dir=None,
    images: int = 256,
    batch_size: int = 64,
    seed: int = 0,
):
    """Evaluation batches for a run: a fixed class-balanced subset of ``images`` validation images
    of the run's data (or ``data``), normalised with the run's mean/std.

    ``config`` is the run config returned by ``load_model``. Returns ``(batches, spec, n_images)``;
    ``batches`` is re-iterable and yields ``(x, y)``.
    """
    from ..train.data import build_datasets

    data_cfg = config.get("data", {}) or {}
    train_cfg = config.get("train", {}) or {}
    spec = data or data_cfg.get("spec") or "fashion-mnist"
    shape = data_cfg.get("image_shape") or [None]
    recorded = train_cfg.get("data_dir")  # the run's own --data-dir: used when it is there on this machine
    if data_dir is None and recorded and Path(recorded).is_dir():
        data_dir = recorded
    _, val = build_datasets(
        spec,
        data_dir=data_dir,
        val_subset=images,
        seed=seed,
        in_chans=shape[0] or 3,
        image_size=train_cfg.get("image_size"),
    )
    mean = data_cfg.get("mean") or list(val.mean)
    std = data_cfg.get("std") or list(val.std)
    return _EvalBatches(val, mean, std, batch_size), spec, len(val)


def compare_section(
    ctx, *, images: int = 256, batch_size: int = 64, seed: int = 0, max_figures: int | None = 2
) -> tuple[str, str] | None:
    """The analysis section of a block-comparison report (:mod:`globalctx.compare`).

    For every variant whose model has NL/DNL/GC/SNL blocks (``ctx.run_dirs``), loads its best
    checkpoint, evaluates ``images`` validation images of the compare data, writes attention
    figures of its ``max_figures`` deepest blocks (``analysis_<variant>_attention_<block>.png``)
    and one combined ``analysis_stats.png`` into ``ctx.out_dir``, and returns
    ``(title, markdown)``: the definitions and GCNet's reading once, then per variant its table,
    its reading against GCNet's, and its figures. ``None`` when no variant has such blocks.

    The run directories are the comparison's own: when its base model is an import path given by
    the user (``ctx.base.model``), exactly that path is accepted in their configs.
    """
    from .plots import plot_statistics

    out = Path(ctx.out_dir)
    parts, all_stats = [], {}
    batches = None
    for variant, run_dir in ctx.run_dirs.items():
        own_code = getattr(getattr(ctx, "base", None), "model", "")
        trusted = ":" in own_code and _config_model(run_dir) == own_code
        model, config = load_source(run_dir, trust_model_code=trusted)
        if not find_blocks(model):
            continue
        if batches is None:
            base = getattr(ctx, "base", None)
            batches, spec, n = eval_batches(
                config,
                data_dir=getattr(base, "data_dir", None),
                images=images,
                batch_size=batch_size,
                seed=seed,
            )
        md, stats = analyse(
            model,
            batches,
            out_dir=out,
            title=variant,
            prefix=f"analysis_{_slug(variant)}_",
            max_batches=None,
            seed=seed,
            heading_level=3,
            definitions=False,
            gcnet_text=False,
            stats_figure=False,
            max_figures=max_figures,
        )
        parts.append(md)
        all_stats[variant] = stats
    if not all_stats:
        return None
    plot_statistics(all_stats, out / "analysis_stats.png", title="Query-independence statistics per variant")
    intro = (
        f"What the attention blocks learned, on {n} validation images of `{spec}` (class-balanced, seed "
        f"{seed}). " + DEFINITIONS.format(nimg=n, max_queries=256, seed=seed) + " Details: docs/analysis.md."
        f"\n\n**GCNet's reading.** {GCNET_READING}\n\n![statistics of all variants](analysis_stats.png)\n"
    )
    return "Analysis: query independence (GCNet Table 1)", intro + "\n".join(parts)
