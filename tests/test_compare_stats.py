"""compare.stats: the t distribution, intervals, paired differences and verdicts, checked by hand."""

import json
import math

import pytest

from globalctx.compare.stats import (
    NO_INTERVAL,
    Interval,
    binomial_se,
    mean_interval,
    paired_difference,
    summarize,
    t_cdf,
    t_quantile,
    verdict,
)

# Reference values t(p, df) as R's qt(p, df) / scipy.stats.t.ppf(p, df) give them, 9 significant digits.
T975 = {1: 12.7062047, 2: 4.30265273, 3: 3.18244631, 4: 2.77644511, 5: 2.57058184, 10: 2.22813885,
        30: 2.04227246, 100: 1.98397152}  # fmt: skip


@pytest.mark.parametrize("df,expected", sorted(T975.items()))
def test_t_quantile_975_known_values(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("p,df,expected", [(0.995, 5, 4.032142984), (0.95, 10, 1.812461123), (0.9, 3, 1.637744354),
                                           (0.99, 20, 2.527977003)])  # fmt: skip
def test_t_quantile_other_levels(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-6)


def test_t_quantile_large_df_tends_to_normal():
    # z(0.975) = 1.959963985; t(0.975, df) ~ z + (z^3 + z) / (4 df)
    z = 1.959963985
    assert t_quantile(0.975, 10**6) == pytest.approx(z + (z**3 + z) / 4e6, abs=1e-8)


def test_t_quantile_symmetry_and_centre():
    assert t_quantile(0.5, 7) == 0.0
    for df in (1, 2, 3, 7.5, 40):
        assert t_quantile(0.1, df) == pytest.approx(-t_quantile(0.9, df), abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 4.5, 9, 29, 31, 250])
def test_t_quantile_inverts_cdf(df):
    for p in (0.6, 0.9, 0.975, 0.999):
        assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


def test_t_cdf_closed_forms():
    for t in (-3.0, -0.5, 0.0, 0.7, 12.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)  # Cauchy
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    assert t_cdf(math.inf, 3) == 1.0 and t_cdf(-math.inf, 3) == 0.0


@pytest.mark.parametrize("p,df", [(0.0, 3), (1.0, 3), (1.5, 3), (0.9, 0), (0.9, -1), (0.9, math.nan), (True, 3)])
def test_t_quantile_rejects_bad_arguments(p, df):
    with pytest.raises(ValueError):
        t_quantile(p, df)


# A hand-computed example (percent). Baseline 80, 82, 84: mean 82, sd 2, half-width t(0.975, 2) * 2 / sqrt(3).
# Variant 81, 83, 85.5: mean 83.1667. Paired differences 1, 1, 1.5: mean 7/6, sd 1/sqrt(12),
# half-width t * (1/sqrt(12)) / sqrt(3) = t / 6 = 0.7171088, CI [0.4496, 1.8838]: excludes 0 ("better")
# while the per-variant CIs [77.03, 86.97] and [77.57, 88.77] overlap almost entirely.
BASE = {0: 0.80, 1: 0.82, 2: 0.84}
VAR = {0: 0.81, 1: 0.83, 2: 0.855}
T2 = 4.30265273


def test_mean_interval_hand_example():
    iv = mean_interval([80.0, 82.0, 84.0])
    assert iv.n == 3 and iv.mean == pytest.approx(82.0) and iv.sd == pytest.approx(2.0)
    assert iv.half_width == pytest.approx(T2 * 2 / math.sqrt(3), abs=1e-6)
    assert (iv.low, iv.high) == pytest.approx((82 - 4.9682754, 82 + 4.9682754), abs=1e-6)
    assert iv.note == ""


def test_paired_ci_excludes_zero_where_unpaired_cis_overlap():
    d = paired_difference(VAR, BASE, names=("gc", "none"))
    assert d.seeds == (0, 1, 2)
    assert d.differences == pytest.approx((1.0, 1.0, 1.5), abs=1e-9)
    assert d.interval.mean == pytest.approx(7 / 6, abs=1e-9)
    assert d.interval.sd == pytest.approx(1 / math.sqrt(12), abs=1e-9)
    assert d.interval.half_width == pytest.approx(T2 / 6, abs=1e-7)
    assert d.interval.low == pytest.approx(7 / 6 - T2 / 6, abs=1e-7)
    assert d.verdict == "better"
    assert d.resolvable_delta == d.interval.half_width
    s = summarize({"none": BASE, "gc": VAR})
    vb, vg = s.variant("none").interval, s.variant("gc").interval
    assert vg.mean == pytest.approx(83.1666667, abs=1e-6)
    assert vg.sd == pytest.approx(math.sqrt(61 / 12), abs=1e-9)  # squared deviations sum 61/6, over n - 1 = 2
    assert vb.overlaps(vg) and vg.low < vb.mean < vg.high
    # unpaired, the difference of means is far inside both half-widths
    assert vg.mean - vb.mean < min(vb.half_width, vg.half_width)


def test_verdicts():
    assert verdict(mean_interval([1.0, 1.2, 0.9])) == "better"
    assert verdict(mean_interval([-1.0, -1.2, -0.9])) == "worse"
    assert verdict(mean_interval([-1.0, 1.2, 0.1])) == "not resolved"
    assert verdict(mean_interval([5.0])) == "not resolved"
    assert verdict(Interval(0, None, None, None)) == "not resolved"


def test_one_value_has_no_interval():
    iv = mean_interval([81.5])
    assert iv.n == 1 and iv.mean == 81.5
    assert iv.sd is None and iv.half_width is None and iv.low is None and iv.high is None
    assert iv.note == NO_INTERVAL == "n=1: no interval"
    assert iv.to_dict()["note"] == NO_INTERVAL
    assert mean_interval([]).note == "n=0: no values"


def test_confidence_level_changes_the_width():
    xs = [1.0, 2.0, 4.0, 3.0]
    w90, w99 = mean_interval(xs, 0.90).half_width, mean_interval(xs, 0.99).half_width
    sem = mean_interval(xs).sd / 2
    assert w90 == pytest.approx(t_quantile(0.95, 3) * sem) and w99 == pytest.approx(t_quantile(0.995, 3) * sem)
    with pytest.raises(ValueError, match="confidence"):
        mean_interval(xs, 95)
    with pytest.raises(ValueError, match="finite"):
        mean_interval([1.0, math.nan])


def test_binomial_se():
    assert binomial_se(0.9, 10_000) == pytest.approx(0.003)
    assert binomial_se(0.5, 100) == pytest.approx(0.05)
    assert binomial_se(1.0, 50) == 0.0
    for p, n in ((1.2, 10), (-0.1, 10), (0.5, 0), (0.5, 2.5), (True, 10)):
        with pytest.raises(ValueError):
            binomial_se(p, n)


def test_summarize_hand_example():
    s = summarize({"none": BASE, "gc": VAR, "se": {0: 0.79, 1: 0.81, 2: 0.83}}, n_test=10_000,
                  labels={"gc": "GC r16"})  # fmt: skip
    assert [v.variant for v in s.variants] == ["none", "gc", "se"]
    assert s.variant("gc").label == "GC r16" and s.variant("none").label == "none"
    assert s.variant("none").values == pytest.approx((80.0, 82.0, 84.0))
    assert s.variant("none").test_se == pytest.approx(100 * math.sqrt(0.82 * 0.18 / 10_000))
    assert [d.variant for d in s.differences] == ["gc", "se"]
    se = s.difference("se")
    assert se.differences == pytest.approx((-1.0, -1.0, -1.0), abs=1e-9)
    assert se.interval.half_width == pytest.approx(0.0, abs=1e-7) and se.verdict == "worse"
    assert s.resolution.low == pytest.approx(se.interval.half_width)
    assert s.resolution.high == pytest.approx(T2 / 6, abs=1e-7)
    assert s.seeds == (0, 1, 2)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["baseline"] == "none" and d["n_test"] == 10_000
    assert [x["verdict"] for x in d["differences"]] == ["better", "worse"]
    assert d["variants"][0]["interval"]["half_width"] == pytest.approx(T2 * 2 / math.sqrt(3), abs=1e-6)


def test_summarize_pairs_only_shared_seeds():
    s = summarize({"none": {0: 0.8, 1: 0.82, 2: 0.84}, "gc": {1: 0.83, 2: 0.86, 3: 0.9}})
    d = s.difference("gc")
    assert d.seeds == (1, 2) and d.differences == pytest.approx((1.0, 2.0), abs=1e-9)
    assert s.variant("gc").seeds == (1, 2, 3)
    assert s.seeds == (0, 1, 2, 3)


def test_summarize_one_seed():
    s = summarize({"none": {0: 0.8}, "gc": {0: 0.81}}, n_test=2000)
    d = s.difference("gc")
    assert d.verdict == "not resolved" and d.interval.note == NO_INTERVAL
    assert s.resolution.median is None and s.resolution.note == NO_INTERVAL
    assert s.variant("gc").test_se == pytest.approx(100 * math.sqrt(0.81 * 0.19 / 2000))


def test_summarize_errors():
    with pytest.raises(ValueError, match="baseline 'none' is not among the variants: gc"):
        summarize({"gc": {0: 0.8}})
    with pytest.raises(ValueError, match="fraction in \\[0, 1\\], got 81.0"):
        summarize({"none": {0: 81.0}})
    with pytest.raises(ValueError, match="seed -> accuracy"):
        summarize({"none": [0.8]})
    s = summarize({"none": {0: 0.8}})
    with pytest.raises(ValueError, match="unknown variant 'gc'"):
        s.variant("gc")
    with pytest.raises(ValueError, match="no paired difference"):
        s.difference("none")
