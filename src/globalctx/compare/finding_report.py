"""``report.md`` of the GCNet-finding study (:mod:`globalctx.compare.finding`): tables, verdicts, figures."""

from __future__ import annotations

import math
from pathlib import Path

from ..analysis.stats import fmt
from .stats import mean_interval

__all__ = ["write_finding_report", "finding_verdicts"]

_COLUMNS = {
    "input_cos": "cos(input)",
    "output_cos": "cos(output)",
    "att_cos": "cos(att)",
    "ratio": "cos(att) / cos(input)",
    "att_jsd": "JSD(att)",
    "att_entropy": "H / ln L",
    "peak": "peak / uniform",
    "att_cos_centred": "cos(att - mean)",
    "common_share": "common share",
}


def _vals(runs, task, block, key) -> list[float]:
    out = []
    for r in runs:
        if r["task"] != task or r["block"] != block:
            continue
        v = r["att_cos"] / r["input_cos"] if key == "ratio" and r.get("input_cos") else r.get(key)
        if v is not None and math.isfinite(v):
            out.append(float(v))
    return out


def _cell(vals: list[float]) -> str:
    if not vals:
        return "n/a"
    iv = mean_interval(vals)
    return fmt(iv.mean) if iv.half_width is None else f"{fmt(iv.mean)} ± {fmt(iv.half_width)}"


def _mean(runs, task, block, key) -> float:
    v = _vals(runs, task, block, key)
    return sum(v) / len(v) if v else math.nan


def finding_verdicts(result: dict) -> list[str]:
    """The reading against GCNet and DNL, one sentence per check, with the numbers."""
    from .finding import FAR_MORE_ALIKE, FLAT_ENTROPY, LEARNED_ENTROPY, LEARNED_PEAK

    runs, lines = result["runs"], []
    ratios = {}
    for task in dict.fromkeys(r["task"] for r in runs):
        if not _vals(runs, task, "nl", "att_cos"):
            continue
        ent, peak = _mean(runs, task, "nl", "att_entropy"), _mean(runs, task, "nl", "peak")
        ratio = ratios[task] = _mean(runs, task, "nl", "ratio")
        learned = ent <= LEARNED_ENTROPY or peak >= LEARNED_PEAK
        per_seed = _vals(runs, task, "nl", "ratio")
        iv = mean_interval(per_seed)
        if ent > FLAT_ENTROPY:
            verdict = f"not tested (maps flat, entropy {ent:.3f} > {FLAT_ENTROPY})"
        elif iv.half_width is not None and iv.low <= FAR_MORE_ALIKE <= iv.high:
            verdict = (
                f"is not resolved by {iv.n} seeds (95% interval of the ratio [{iv.low:.3g}, {iv.high:.3g}] "
                f"contains {FAR_MORE_ALIKE}; per seed {', '.join(f'{v:.3g}' for v in per_seed)})"
            )
        elif ratio < FAR_MORE_ALIKE:
            verdict = "holds" if learned else "holds, on maps short of the learned-map target"
        else:
            verdict = "does not hold"
        lines.append(
            f"**{task}, NL:** GCNet's finding {verdict}: mean cos(att) / cos(input) = {ratio:.3g} (criterion < "
            f"{FAR_MORE_ALIKE}), mean entropy {ent:.3f}, peak {peak:.3g}x uniform (learned-map target: entropy <= "
            f"{LEARNED_ENTROPY} or peak >= {LEARNED_PEAK}); common share of the maps' deviation from flat "
            f"{_mean(runs, task, 'nl', 'common_share'):.3f}."
        )
    if len(ratios) == 2 and all(math.isfinite(v) for v in ratios.values()):
        (a, ra), (b, rb) = ratios.items()
        x = rb / ra if ra > 0 else math.inf
        lines.append(
            f"**Control:** NL's cos(att)/cos(input) is {x:.3g}x higher on {b} than on {a} (expected >= 5x): "
            + ("met." if x >= 5 else "not met.")
        )
    for task in dict.fromkeys(r["task"] for r in runs):
        if not _vals(runs, task, "dnl", "att_cos"):
            continue
        cs, ratio = _mean(runs, task, "dnl", "common_share"), _mean(runs, task, "dnl", "ratio")
        ue, up = _mean(runs, task, "dnl", "unary_entropy"), _mean(runs, task, "dnl", "unary_peak")
        pe = _mean(runs, task, "dnl", "att_entropy")
        uc = _mean(runs, task, "dnl", "unary_vs_mean_pairwise_cos")
        specific = cs < 0.5 and ratio >= FAR_MORE_ALIKE
        flat = pe > FLAT_ENTROPY
        lines.append(
            f"**{task}, DNL:** whitened pairwise maps: cos(att)/cos(input) {ratio:.3g}, common share {cs:.3f}, "
            f"entropy {pe:.3f} -> "
            + ("not tested (flat pairwise maps)" if flat else ("query-specific" if specific else "not query-specific"))
            + f"; unary map: entropy {ue:.3f}, peak {up:.3g}x uniform, cosine with the mean pairwise map's "
            f"deviation {uc:.3f} -> "
            + ("carries a non-flat common part" if ue <= FLAT_ENTROPY else "close to flat")
            + "."
        )
    return lines


def write_finding_report(result: dict, out: Path) -> Path:
    """``report.md`` into ``out`` (figure links relative to it)."""
    from .finding import EMBED_GAIN, STAGE

    runs = result["runs"]
    s = result["settings"]
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    blocks = list(dict.fromkeys(r["block"] for r in runs))
    md = [
        "# GCNet's finding on learned attention maps",
        "",
        f"Network `{s['model']}` {s['model_kwargs']}, one block after the last residual add of stage {STAGE} "
        f"(8x8 positions on the 64x64 canvases); query/key embeddings drawn with `embed_gain` {EMBED_GAIN} "
        "(std G/sqrt(C); DNL's smaller G offsets its temperature 0.05; everything else, and SNL/GC, the official "
        "init). One epoch of "
        + ", ".join(f"{n:,} canvases ({n // s['batch_size']} steps) on `{t}`" for t, n in result["task_images"].items())
        + f"; batch {s['batch_size']}, {s['opt']} lr {s['lr']} {s['sched']}, warm-up {s['warmup_epochs']} epoch; "
        f"seeds {result['seeds']}; accuracy on {s['val_subset']} test canvases; statistics on "
        f"{runs[0]['images'] if runs else 0} test canvases, all 64 query positions. "
        f"Training time of the {len(runs)} runs (sum, as measured when each ran): "
        f"{sum(r.get('train_time_s', 0.0) for r in runs):.0f} s; this call: wall {result['wall_s_this_call']:.0f} s "
        f"({result['threads']} thread(s)).",
        "",
        "## Reading",
        "",
        *[f"- {line}" for line in finding_verdicts(result)],
        "",
    ]
    for task in tasks:
        acc = result["accuracy"].get(task, {})
        md += [f"## `{task}`", "", "| block | top-1 % (95% CI over seeds) | vs " + acc.get("baseline", "?") + " (pp) |"]
        md.append("|---|---|---|")
        diffs = {d["variant"]: d for d in acc.get("differences", [])}
        for v in acc.get("variants", []):
            iv = v["interval"]
            ci = f"{iv['mean']:.1f}" + (f" [{iv['low']:.1f}, {iv['high']:.1f}]" if iv["half_width"] else " (n=1)")
            d = diffs.get(v["variant"])
            dtxt = "baseline"
            if d is not None:
                di = d["interval"]
                dtxt = f"{di['mean']:+.1f}" + (f" [{di['low']:+.1f}, {di['high']:+.1f}]" if di["half_width"] else "")
                dtxt += f", {d['verdict']}"
            md.append(f"| {v['variant']} | {ci} | {dtxt} |")
        md += ["", "Statistics (mean ± 95% half-width over seeds):", ""]
        md.append("| block | " + " | ".join(_COLUMNS.values()) + " |")
        md.append("|---|" + "---|" * len(_COLUMNS))
        for b in blocks:
            shared = b in ("gc", "snl")
            cells = [
                "0 (shared map)" if shared and k in ("att_cos", "ratio", "att_jsd", "att_cos_centred", "common_share")
                else _cell(_vals(runs, task, b, k))
                for k in _COLUMNS
            ]  # fmt: skip
            md.append(f"| {b} | " + " | ".join(cells) + " |")
        dnl = [r for r in runs if r["task"] == task and r["block"] == "dnl"]
        if dnl:
            md += ["", "DNL's unary map: entropy " + _cell(_vals(runs, task, "dnl", "unary_entropy"))
                   + ", peak " + _cell(_vals(runs, task, "dnl", "unary_peak")) + "x uniform; cosine between the "
                   "deviations from flat of the unary map and of the mean pairwise map "
                   + _cell(_vals(runs, task, "dnl", "unary_vs_mean_pairwise_cos")) + "; gamma "
                   + _cell(_vals(runs, task, "dnl", "gamma")) + "."]  # fmt: skip
        md += ["", f"![statistics over training, {task}](over_training_{task}.png)", ""]
        for b in blocks:
            mine = [r for r in runs if r["task"] == task and r["block"] == b]
            fig = next((r["figure"] for r in mine if r.get("figure")), None)
            if fig:
                md += [f"![{b} maps on {task}]({fig})", ""]
    md += [
        "Definitions: cos = mean cosine distance (1 - cos)/2 over all ordered pairs of positions (GCNet Table 1); "
        "JSD in nats; H / ln L = attention entropy relative to a uniform map; peak = max / mean of a map; "
        "cos(att - mean) = the cosine statistic of the maps minus their mean; common share = "
        "1 - |R - mean_q R|^2 / |R - 1/L|^2, the share of the maps' deviation from flat that is the same for all "
        "queries (1 = one map for every query, GCNet's finding; 0 = none in common).",
        "",
    ]
    path = Path(out) / "report.md"
    path.write_text("\n".join(md))
    return path
