"""The comparison report: ``report.md`` assembled from ``(title, markdown)`` sections (settings,
results with intervals and verdicts, the reading, the preset's rows beside the paper's figures,
figures, failed runs, context, the attention analysis of :func:`globalctx.analysis.compare_section`,
then any extra sections given), ``results.csv`` (one row per variant and seed), ``summary.json``
(the statistics, the reading, the machine) and the figures of :mod:`globalctx.compare.figures`
(only when matplotlib is installed)."""

from __future__ import annotations

import csv
import datetime
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace

from ..analysis import compare_section
from .estimate import format_duration
from .reading import build_reading
from .stats import Interval, Summary

__all__ = [
    "CSV_COLUMNS",
    "results_table",
    "preset_tables",
    "write_csv",
    "write_summary",
    "settings_section",
    "ANALYSIS_MODES",
    "analysis_section",
    "build_report_sections",
    "write_report",
    "format_mean",
    "format_difference",
]

Section = Callable[..., "tuple[str, str] | None"]

CSV_COLUMNS = ("variant", "label", "seed", "top1", "best_top1", "val_loss", "val_n", "train_loss", "train_acc",
               "epochs", "train_time_s", "params", "macs_m", "latency_ms", "threads", "run_dir")  # fmt: skip


def format_mean(iv: Interval) -> str:
    """``"85.12 ± 0.43"`` (mean ± 95% half-width, percent); ``"85.12 (n=1)"`` without an interval."""
    if iv.mean is None:
        return "-"
    return f"{iv.mean:.2f} (n=1)" if iv.half_width is None else f"{iv.mean:.2f} ± {iv.half_width:.2f}"


def format_difference(iv: Interval) -> str:
    """``"+0.35 [-0.20, +0.90]"`` (mean paired difference and its 95% interval, pp)."""
    if iv.mean is None:
        return "-"
    if iv.half_width is None:
        return f"{iv.mean:+.2f} (n=1: no interval)"
    return f"{iv.mean:+.2f} [{iv.low:+.2f}, {iv.high:+.2f}]"


def _cost(ctx, v: str, key: str, fmt: str) -> str:
    x = ctx.costs.get(v, {}).get(key)
    return "-" if x is None else fmt.format(x)


def results_table(ctx) -> str:
    """Per variant: label, spec, seeds, mean top-1 ± 95% CI, paired difference vs the baseline with
    its CI, verdict, test-sampling SE, cost, training time per run."""
    s: Summary | None = ctx.summary
    head = ("| variant | spec | seeds | top-1 % (mean ± 95% CI) | vs baseline, pp [95% CI] | verdict | test SE pp "
            "| params | MMACs | CPU latency ms | train s/run |")  # fmt: skip
    sep = "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"
    body = []
    for v in ctx.variants:
        label = ctx.label(v)
        if s is None or v not in {x.variant for x in s.variants}:
            body.append(f"| {label} | `{v}` | 0 | - | - | - | - | - | - | - | - |")
            continue
        vs = s.variant(v)
        if v == s.baseline:
            diff, verdict = "(baseline)", "-"
        else:
            d = s.difference(v)
            diff, verdict = format_difference(d.interval), d.verdict
        times = [r["train_time_s"] for r in ctx.rows if r["variant"] == v]
        se = "-" if vs.test_se is None else f"{vs.test_se:.2f}"
        body.append(
            f"| {label} | `{v}` | {vs.interval.n} | {format_mean(vs.interval)} | {diff} | {verdict} | {se} "
            f"| {_cost(ctx, v, 'params', '{:,}')} | {_cost(ctx, v, 'macs_m', '{:.2f}')} "
            f"| {_cost(ctx, v, 'latency_ms', '{:.2f}')} | {sum(times) / len(times):.0f} |"
        )
    return "\n".join([head, sep, *body])


def preset_tables(ctx) -> str:
    """One table per group of the preset: the paper's row, spec, published figure, ours."""
    from .variants import same_variant

    s: Summary | None = ctx.summary
    have = {x.variant for x in s.variants} if s else set()
    parts = [f"{ctx.preset.title}.\n"]
    for group in ctx.preset.groups():
        rows = ctx.preset.rows_of(group)
        source = next((r.paper.source for r in rows if r.paper is not None), "no numbers found")
        parts.append(f"**{group}** — paper: {source}")
        parts.append("\n| row | spec | paper | ours: top-1 % (mean ± 95% CI) | ours vs baseline, pp [95% CI] "
                     "| verdict | note |\n|---|---|---|---:|---:|---|---|")  # fmt: skip
        for r in rows:
            v = next((x for x in ctx.variants if same_variant(x, r.spec)), r.spec)
            if v not in have:
                ours, diff, verdict = "not run", "-", "-"
            else:
                ours = format_mean(s.variant(v).interval)
                if v == s.baseline:
                    diff, verdict = "(baseline)", "-"
                else:
                    d = s.difference(v)
                    diff, verdict = format_difference(d.interval), d.verdict
            parts.append(f"| {r.name} | `{r.spec}` | {r.paper_text} | {ours} | {diff} | {verdict} | {r.note} |")
        parts.append("")
    parts += [f"- {n}" for n in ctx.preset.notes]
    return "\n".join(parts)


def write_csv(path: Path, rows: list[dict]) -> Path:
    """``results.csv``: one row per finished (variant, seed), columns :data:`CSV_COLUMNS`."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return Path(path)


def write_summary(path: Path, ctx) -> Path:
    """``summary.json``: the statistics (:meth:`Summary.to_dict`), the reading, settings, machine."""
    doc = {
        "statistics": None if ctx.summary is None else ctx.summary.to_dict(),
        "reading": None if ctx.summary is None else build_reading(ctx.summary).to_dict(),
        "variants": [{"spec": v, "label": ctx.label(v)} for v in ctx.variants],
        "seeds": list(ctx.seeds),
        "preset": None if ctx.preset is None else ctx.preset.name,
        "settings": {k: v for k, v in ctx.base.to_dict().items() if k not in ("out", "attn", "seed")},
        "costs": ctx.costs,
        "failed": ctx.failed,
        "trained_now": [list(k) for k in ctx.trained],
        "reused": [list(k) for k in ctx.reused],
        "estimate_s": ctx.estimate_s,
        "wall_time_s": ctx.wall_time_s,
        "environment": ctx.environment,
        "written": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return Path(path)


def settings_section(ctx) -> str:
    cfg = ctx.base
    env = ctx.environment
    lines = [
        f"- model: `{cfg.model}` with {json.dumps(cfg.model_kwargs)}; the variants' blocks are given as specs "
        "(docs/compare.md); paired design: for each seed every variant sees the same training subset, data "
        "order and augmentation",
        f"- seeds: {', '.join(map(str, ctx.seeds))}",
        f"- data: `{cfg.data}`, training subset: {cfg.subset or 'all'} images (class-balanced, drawn with the "
        f"seed), test: {cfg.val_subset or 'all'} images",
        f"- schedule: {cfg.epochs} epochs, batch {cfg.batch_size}, {cfg.opt} lr {cfg.lr} ({cfg.sched}, warm-up "
        f"{cfg.warmup_epochs} epochs), weight decay {cfg.weight_decay} (not on norms/biases/no_weight_decay)",
        f"- machine: {env.get('machine')}, {env.get('cpu')}, {env.get('cores')} cores, {env.get('threads')} threads, "
        f"torch {env.get('torch')}, python {env.get('python')}; load average at start {env.get('load_at_start', '?')}",
        f"- runs: {len(ctx.rows)} finished ({len(ctx.trained)} trained by this command, {len(ctx.reused)} read back "
        f"from their checkpoints), {len(ctx.failed)} failed; run directories `<variant>/seed<k>/` (`compare.json` "
        "lists the settings)",
    ]
    if ctx.estimate_s:
        lines.append(f"- time: estimated {format_duration(ctx.estimate_s)} before starting, took "
                     f"{format_duration(ctx.wall_time_s)} for the runs trained now")  # fmt: skip
    return "\n".join(lines)


def _result_notes(ctx) -> str:
    s = ctx.summary
    n = s.n_test if s else None
    notes = [
        f"top-1: accuracy after the last epoch on {n or '?'} test images, mean over seeds ± the half-width of the "
        "95% Student-t interval. vs baseline: the mean of the per-seed differences from "
        f"`{ctx.variants[0]}` and its 95% interval (paired by seed). verdict: better / worse when that interval "
        "excludes 0, otherwise not resolved.",
        "test SE: the test-sampling standard error of one accuracy, sqrt(p(1-p)/n); it covers only the draw "
        "of test images, not seed-to-seed variation.",
        "MACs: one 28x28 image, convolutions, matmuls and attention products (globalctx.bench counting). "
        f"latency: median of 20 batch-1 forwards on CPU ({ctx.environment.get('threads')} threads). train s/run: "
        "the training epochs only (no evaluation), wall clock, mean over seeds.",
        "Bit-identical numbers are reproduced on the same machine only: another CPU or BLAS build gives other "
        "rounding and so other runs; the intervals are what carries over.",
    ]
    if ctx.skipped:
        notes.append(f"Not registered (skipped): {', '.join(ctx.skipped)}.")
    return "\n".join(f"- {x}" for x in notes)


def _failed_section(ctx) -> str:
    lines = ["These runs failed; the finished runs above are kept. Fix the cause and run the same command again "
             f"(or `globalctx compare --resume {ctx.out_dir}`): only the missing runs are trained.\n"]  # fmt: skip
    lines += [f"- `{f['variant']}`, seed {f['seed']}: {f['error']}" for f in ctx.failed]
    return "\n".join(lines)


ANALYSIS_MODES = ("all", "defaults", "none")


def analysis_section(ctx) -> tuple[str, str] | None:
    """The attention analysis (:func:`globalctx.analysis.compare_section`) of the first finished
    seed of each variant: all of them (``ctx.analysis == "all"``), only the variants that are a
    bare block name at its paper-default placement (``"defaults"``: a preset's many variants of
    one block would repeat the same analysis at a cost of minutes each), or none."""
    mode = getattr(ctx, "analysis", "all")
    if mode not in ANALYSIS_MODES:
        raise ValueError(f"analysis={mode!r} is not valid; choose one of {', '.join(ANALYSIS_MODES)}")
    if mode == "none":
        return None
    run_dirs = dict(ctx.run_dirs)
    if mode == "defaults":
        run_dirs = {v: d for v, d in run_dirs.items() if v.isidentifier()}
    return compare_section(SimpleNamespace(out_dir=ctx.out_dir, base=ctx.base, run_dirs=run_dirs))


def build_report_sections(ctx, sections: Sequence[Section] = ()) -> list[tuple[str, str]]:
    """The report as ``(title, markdown)`` pairs: settings, results table, reading, the preset's
    tables, figures, failed runs, context, the attention analysis, then ``fn(ctx)`` of every
    extra section (``None`` adds nothing). A section that raises is replaced by a note naming the
    error, so the trained results are never lost."""
    from .run import PUBLISHED_NOTE

    out = [("Settings", settings_section(ctx))]
    if ctx.summary is None:
        out.append(("Results", f"No finished run of the baseline `{ctx.variants[0]}`: no statistics."))
    else:
        out.append(("Results", results_table(ctx) + "\n\n" + _result_notes(ctx)))
        out.append(("Reading", build_reading(ctx.summary).to_markdown()))
        if ctx.preset is not None:
            out.append((f"Preset {ctx.preset.name}: the paper's rows and ours", preset_tables(ctx)))
    if ctx.figures:
        out.append(("Figures", "\n".join(f"![{f}]({f})" for f in ctx.figures)))
    if ctx.failed:
        out.append(("Failed runs", _failed_section(ctx)))
    out.append(("Context", PUBLISHED_NOTE))
    for fn in (analysis_section, *sections):
        try:
            sec = fn(ctx)
        except Exception as e:  # a broken section must not lose the trained results
            sec = (getattr(fn, "__name__", "extra section"), f"(this section failed: {type(e).__name__}: {e})")
        if sec is not None:
            out.append(sec)
    return out


def write_report(ctx, sections: Sequence[Section] = ()) -> Path:
    """Write results.csv, summary.json, the figures (when matplotlib is available) and report.md
    into ``ctx.out_dir``."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(ctx.out_dir / "results.csv", ctx.rows)
    write_summary(ctx.out_dir / "summary.json", ctx)
    ctx.figures = []
    try:
        from .figures import plot_accuracy, plot_curves

        if ctx.summary is not None:
            ctx.figures.append(plot_accuracy(ctx.summary, ctx.out_dir / "accuracy.png").name)
        if ctx.histories:
            labels = {v: ctx.label(v) for v in ctx.variants}
            ctx.figures.append(plot_curves(ctx.histories, labels, ctx.out_dir / "curves.png").name)
    except ImportError:
        pass
    body = [f"# Block comparison ({ctx.started})\n"]
    for title, md in build_report_sections(ctx, sections):
        body.append(f"## {title}\n\n{md.rstrip()}\n")
    path = ctx.out_dir / "report.md"
    path.write_text("\n".join(body))
    return path
