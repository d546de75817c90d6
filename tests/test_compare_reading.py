"""compare.reading: the words follow the numbers (resolved or not, no ranking inside overlaps, n=1)."""

import json
import random

import pytest

from globalctx.compare.reading import build_reading, distinguishable_groups
from globalctx.compare.stats import NO_INTERVAL, summarize

# the hand example of test_compare_stats: gc's paired CI [+0.45, +1.88] pp excludes 0, its
# per-variant CI overlaps none's; se is 10.5 pp worse; nl's differences are +0, +2, -2 pp.
RESULTS = {
    "none": {0: 0.80, 1: 0.82, 2: 0.84},
    "gc": {0: 0.81, 1: 0.83, 2: 0.855},
    "se": {0: 0.695, 1: 0.715, 2: 0.735},
    "nl": {0: 0.80, 1: 0.84, 2: 0.82},
}


def test_resolved_and_unresolved():
    s = summarize(RESULTS, n_test=10_000, labels={"gc": "GC r16"})
    r = build_reading(s)
    assert r.resolved == (
        "GC r16 is better than none by +1.17 pp (95% CI +0.45 to +1.88 pp).",
        "se is worse than none by -10.50 pp (95% CI -10.50 to -10.50 pp).",
    )
    assert len(r.unresolved) == 1 and r.unresolved[0].startswith("nl (+0.00 pp, 95% CI -4.97 to +4.97 pp)")
    text = r.text()
    assert "4 variants, 3 seeds (0, 1, 2), top-1 on 10,000 test images" in text
    assert "Not resolved (the interval contains 0): nl" in text
    assert f"±{s.variant('none').test_se:.2f} pp (10,000 images)" in text
    med = s.resolution.median
    assert r.resolvable_delta == med and f"about {med:.2f} pp" in text
    assert f"{s.resolution.low:.2f} to {s.resolution.high:.2f} pp across variants" in text
    # gc is resolved by pairing although its interval overlaps none's: the reading says so
    assert "GC r16: resolved by the paired difference although the per-variant intervals overlap" in text
    assert json.loads(json.dumps(r.to_dict()))["resolved"] == list(r.resolved)
    assert r.to_markdown().splitlines()[0].startswith("- 4 variants")


def test_no_ranking_inside_overlapping_intervals():
    s = summarize(RESULTS)
    r = build_reading(s)
    # none, gc, nl overlap (one group, listed in the comparison's order, not by mean); se lies below
    assert r.groups == (("none", "gc", "nl"), ("se",))
    assert "highest first: {none, gc, nl} (not distinguishable) > se." in r.text()
    assert " > gc" not in r.text() and "gc >" not in r.text()


def test_all_overlapping_gives_no_ranking():
    s = summarize({"none": {0: 0.80, 1: 0.82, 2: 0.84}, "gc": {0: 0.84, 1: 0.80, 2: 0.83}})
    r = build_reading(s)
    assert r.groups == (("none", "gc"),)
    assert "not distinguishable from one another" in r.text() and "no ranking is given" in r.text()
    assert r.resolved == () and "No difference from none is resolved at this budget." in r.text()


def test_one_seed_is_honest():
    s = summarize({"none": {0: 0.827}, "se": {0: 0.805}, "gc": {0: 0.8125}}, n_test=2000)
    r = build_reading(s)
    text = r.text()
    assert r.resolved == () and r.resolvable_delta is None
    assert r.unresolved == ("se (-2.20 pp, n=1: no interval)", "gc (-1.45 pp, n=1: no interval)")
    assert NO_INTERVAL in text and "no difference is resolved and no variant is ranked" in text
    assert r.groups == (("none", "se", "gc"),)
    assert "not seed-to-seed variation" in text
    assert "better" not in text and "worse" not in text and ">" not in text


def test_missing_seeds_are_named():
    s = summarize({"none": {0: 0.80, 1: 0.82, 2: 0.84}, "gc": {0: 0.81, 1: 0.83}})
    text = build_reading(s).text()
    assert "Not every variant has all seeds: gc (n=2)." in text


def test_groups_are_separated_and_chained():
    # three well-separated levels: ordered groups, highest first
    levels = {"a": 0.50, "b": 0.70, "c": 0.60}
    s = summarize({k: {i: x + i / 100 for i in range(3)} for k, x in levels.items()}, baseline="a")
    assert [[v.variant for v in g] for g in distinguishable_groups(s.variants)] == [["b"], ["c"], ["a"]]
    assert "highest first: b > c > a." in build_reading(s).text()


@pytest.mark.parametrize("seed", range(20))
def test_groups_never_rank_overlapping_intervals(seed):
    rng = random.Random(seed)
    results = {f"v{i}": {s: min(1.0, max(0.0, rng.gauss(0.8 + rng.choice([0, 0.02, 0.05]), 0.01))) for s in range(3)}
               for i in range(6)}  # fmt: skip
    s = summarize(results, baseline="v0")
    groups = distinguishable_groups(s.variants)
    assert sorted(v.variant for g in groups for v in g) == sorted(results)
    for i, upper in enumerate(groups):
        for lower in groups[i + 1 :]:  # every interval of an upper group lies above every lower one
            assert all(u.interval.low > w.interval.high for u in upper for w in lower)
        if len(upper) > 1:  # a group is a chain of overlaps: no split of it is separated
            ivs = sorted(upper, key=lambda v: v.interval.low)
            reach = ivs[0].interval.high
            for v in ivs[1:]:
                assert v.interval.low <= reach
                reach = max(reach, v.interval.high)


def test_docs_examples_run(capsys):
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```python\n")[1:]]
    assert len(blocks) == 3
    namespace: dict = {}
    for code in blocks:  # the blocks build on each other, as a reader runs them
        exec(compile(code, "docs/compare.md", "exec"), namespace)
    assert "gc is better than none by +1.17 pp" in capsys.readouterr().out


def test_no_shared_seeds_and_a_single_seed_baseline():
    s = summarize({"none": {0: 0.80}, "gc": {1: 0.81, 2: 0.82}, "se": {0: 0.79, 1: 0.8}})
    r = build_reading(s)
    assert r.resolved == () and r.resolvable_delta is None
    assert "gc (no shared seeds)" in r.text() and "se (-1.00 pp, n=1: no interval)" in r.text()
    assert "Not every variant has all seeds: none (n=1)." in r.text()
    assert r.groups == (("none", "gc", "se"),)  # the baseline has no interval: nothing is ordered


def test_two_seeds_are_flagged():
    s = summarize({"none": {0: 0.80, 1: 0.82}, "gc": {0: 0.806, 1: 0.8261}})
    assert s.difference("gc").verdict == "better"  # a tight spread of two differences
    assert "one degree of freedom" in build_reading(s).text()
    three = summarize({"none": {0: 0.80, 1: 0.82, 2: 0.81}, "gc": {0: 0.806, 1: 0.8261, 2: 0.816}})
    assert "one degree of freedom" not in build_reading(three).text()
