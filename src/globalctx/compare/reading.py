"""A reading of a comparison, generated from its numbers (:class:`~globalctx.compare.stats.Summary`).

The rules it follows:

- a difference from the baseline is *resolved* only when its paired interval excludes 0
  (verdict ``"better"`` / ``"worse"``); every other difference is listed as not resolved, with
  its interval;
- the smallest resolvable delta is the half-width of the paired interval (median and range
  over the variants): effects smaller than that cannot be told from seed noise at this budget;
- variants are ordered only between groups whose per-variant intervals do not overlap; inside a
  group they are "not distinguishable" and listed in the comparison's order, not by their means;
- with one seed there are no intervals ("n=1: no interval"): nothing is resolved and nothing is
  ranked; the test-sampling standard error is quoted for what it is (the draw of test images
  only, not seed-to-seed variation).
"""

from __future__ import annotations

from dataclasses import dataclass

from .stats import NO_INTERVAL, Summary, VariantStats

__all__ = ["Reading", "build_reading", "distinguishable_groups"]


@dataclass(frozen=True)
class Reading:
    """The reading as sentences in order, with the parts a report may lay out on its own."""

    sentences: tuple[str, ...]
    resolved: tuple[str, ...]
    unresolved: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    resolvable_delta: float | None

    def text(self) -> str:
        """The reading as one paragraph per sentence."""
        return "\n\n".join(self.sentences)

    def to_markdown(self) -> str:
        """The reading as a markdown bullet list."""
        return "\n".join(f"- {s}" for s in self.sentences)

    def to_dict(self) -> dict:
        return {"sentences": list(self.sentences), "resolved": list(self.resolved),
                "unresolved": list(self.unresolved), "groups": [list(g) for g in self.groups],
                "resolvable_delta_pp": self.resolvable_delta}  # fmt: skip


def distinguishable_groups(variants: tuple[VariantStats, ...] | list[VariantStats]) -> list[list[VariantStats]]:
    """Variants in groups of overlapping per-variant intervals, the highest group first.

    Two groups are ordered because every interval of the upper one lies above every interval of
    the lower one; inside a group the variants keep their given order. A variant without an
    interval (n < 2) overlaps everything, so then all variants form one group.
    """
    vs = list(variants)
    if not vs:
        return []
    if any(v.interval.half_width is None for v in vs):
        return [vs]
    by_high = sorted(vs, key=lambda v: -v.interval.high)
    groups: list[list[VariantStats]] = []
    floor = None  # the lowest interval bottom of the current group
    for v in by_high:
        if groups and v.interval.high >= floor:
            groups[-1].append(v)
            floor = min(floor, v.interval.low)
        else:
            groups.append([v])
            floor = v.interval.low
    order = {v.variant: i for i, v in enumerate(vs)}
    return [sorted(g, key=lambda v: order[v.variant]) for g in groups]


def _pp(x: float) -> str:
    return f"{x:+.2f} pp"


def _ci(low: float, high: float) -> str:
    return f"95% CI {low:+.2f} to {high:+.2f} pp"


def build_reading(summary: Summary) -> Reading:
    """The reading of ``summary`` (see the module docstring for its rules).

    Example::

        >>> from globalctx.compare.stats import summarize
        >>> s = summarize({"none": {0: 0.80, 1: 0.81, 2: 0.82}, "gc": {0: 0.82, 1: 0.83, 2: 0.84}})
        >>> build_reading(s).resolved
        ('gc is better than none by +2.00 pp (95% CI +2.00 to +2.00 pp).',)
    """
    base = summary.variant(summary.baseline)
    labels = {v.variant: v.label for v in summary.variants}
    ns = sorted({v.interval.n for v in summary.variants})
    seeds = summary.seeds
    n_max = ns[-1] if ns else 0
    sentences: list[str] = []

    what = f"{len(summary.variants)} variants, {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"
    what += f" ({', '.join(map(str, seeds))})" if seeds else ""
    if summary.n_test:
        what += f", top-1 on {summary.n_test:,} test images"
    if n_max >= 2:
        what += (f"; {summary.confidence:.0%} Student-t intervals over seeds; differences from "
                 f"{labels[summary.baseline]} are paired per seed.")  # fmt: skip
    else:
        what += "."
    sentences.append(what[0].upper() + what[1:])
    if len(ns) > 1:
        short = [labels[v.variant] + f" (n={v.interval.n})" for v in summary.variants if v.interval.n < n_max]
        sentences.append(f"Not every variant has all seeds: {', '.join(short)}.")

    if n_max < 2:
        sentences.append(
            f"One seed per variant ({NO_INTERVAL}): every number is a single run, so no difference is "
            "resolved and no variant is ranked. Run more seeds (three at least) to get intervals."
        )
        if base.test_se is not None:
            sentences.append(
                f"The test-sampling standard error of one accuracy is about ±{base.test_se:.2f} pp "
                f"({summary.n_test:,} images); it covers only the draw of test images, not seed-to-seed "
                "variation, so it is no interval for a difference."
            )
        single = tuple(f"{labels[d.variant]} ({_pp(d.interval.mean)}, {d.interval.note})" if d.interval.n
                       else f"{labels[d.variant]} (no shared seeds)" for d in summary.differences)  # fmt: skip
        return Reading(tuple(sentences), (), single,
                       (tuple(labels[v.variant] for v in summary.variants),), None)  # fmt: skip

    if n_max == 2:
        sentences.append(
            "Two seeds give intervals with one degree of freedom (t = 12.7): they are wide, and a verdict rests "
            "on the spread of just two differences, which can be small by chance; three seeds or more are needed "
            "before a verdict means much."
        )
    resolved, unresolved = [], []
    for d in summary.differences:
        name = labels[d.variant]
        iv = d.interval
        if d.verdict in ("better", "worse"):
            resolved.append(f"{name} is {d.verdict} than {labels[summary.baseline]} by {_pp(iv.mean)} "
                            f"({_ci(iv.low, iv.high)}).")  # fmt: skip
        elif iv.half_width is None:
            unresolved.append(f"{name} ({_pp(iv.mean)}, {iv.note})" if iv.n else f"{name} (no shared seeds)")
        else:
            unresolved.append(f"{name} ({_pp(iv.mean)}, {_ci(iv.low, iv.high)})")
    if resolved:
        sentences.append("Resolved at this budget: " + " ".join(resolved))
    else:
        sentences.append(f"No difference from {labels[summary.baseline]} is resolved at this budget.")
    if unresolved:
        sentences.append("Not resolved (the interval contains 0): " + "; ".join(unresolved) + ".")

    r = summary.resolution
    if r.median is not None:
        spread = f"; {r.low:.2f} to {r.high:.2f} pp across variants" if r.high > r.low else ""
        sentences.append(
            f"The smallest difference this run can resolve is about {r.median:.2f} pp (the half-width of the paired "
            f"interval{spread}); smaller effects cannot be told from seed noise without more seeds."
        )
    if base.test_se is not None:
        sentences.append(
            f"Test-sampling standard error of one accuracy: ±{base.test_se:.2f} pp ({summary.n_test:,} images)."
        )

    groups = distinguishable_groups(summary.variants)
    names = [tuple(labels[v.variant] for v in g) for g in groups]
    if len(groups) == 1:
        sentences.append("All per-variant intervals overlap: the variants are not distinguishable from one another "
                         "by them, and no ranking is given.")  # fmt: skip
    else:
        parts = [", ".join(g) if len(g) == 1 else "{" + ", ".join(g) + "} (not distinguishable)" for g in names]
        sentences.append("Ordered only where the per-variant intervals do not overlap, highest first: "
                         + " > ".join(parts) + ".")  # fmt: skip
    paired_only = [labels[d.variant] for d in summary.differences if d.verdict != "not resolved"
                   and summary.variant(d.variant).interval.overlaps(base.interval)]  # fmt: skip
    if paired_only:
        sentences.append(
            f"{', '.join(paired_only)}: resolved by the paired difference although the per-variant intervals overlap "
            f"{labels[summary.baseline]}'s (pairing by seed cancels the seed-to-seed variation both runs share)."
        )
    return Reading(tuple(sentences), tuple(resolved), tuple(unresolved), tuple(names), r.median)
