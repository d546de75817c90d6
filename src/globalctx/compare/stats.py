"""Statistics of a seeded comparison: Student-t intervals, paired differences, verdicts.

Everything is plain Python (``math`` only; no scipy). The design it serves: every variant is
trained under the same seeds, with the same data order and augmentation per seed, so the
difference ``variant - baseline`` is taken *per seed* (a paired design) and its mean gets a
Student-t interval with ``n - 1`` degrees of freedom.

- :func:`t_quantile` / :func:`t_cdf`: the Student-t distribution through the regularised
  incomplete beta function (continued fraction), accurate to about 1e-12.
- :func:`mean_interval`: mean and ``confidence`` interval of a sample
  (``mean +- t(1 - alpha/2, n - 1) * sd / sqrt(n)``). With one value there is no interval:
  the fields are ``None`` and :attr:`Interval.note` says ``"n=1: no interval"``.
- :func:`verdict`: ``"better"`` when the interval of a difference lies above 0, ``"worse"``
  below 0, ``"not resolved"`` when it contains 0 or does not exist.
- :func:`binomial_se`: the test-sampling standard error of an accuracy, ``sqrt(p (1 - p) / n)``.
- :func:`summarize`: per-variant mean and interval over seeds, the paired difference of each
  variant against the baseline with its interval and verdict, the test-sampling standard error
  and the smallest resolvable delta (the half-width of the paired interval), as a
  :class:`Summary` whose :meth:`~Summary.to_dict` is the summary JSON.

Units: :func:`summarize` takes accuracies as fractions in ``[0, 1]`` (``val_acc``) and reports
percent (means) and percentage points (differences, half-widths, standard errors).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "VERDICTS",
    "NO_INTERVAL",
    "t_cdf",
    "t_quantile",
    "Interval",
    "mean_interval",
    "verdict",
    "binomial_se",
    "VariantStats",
    "PairedDifference",
    "Resolution",
    "Summary",
    "paired_difference",
    "summarize",
]

VERDICTS = ("better", "worse", "not resolved")
NO_INTERVAL = "n=1: no interval"


# ---------------------------------------------------------------------------------------------
# The Student-t distribution


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))  # even step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))  # odd step
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise ValueError(f"incomplete beta continued fraction did not converge for a={a}, b={b}, x={x}")


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _check_df(df: float) -> float:
    if isinstance(df, bool) or not isinstance(df, (int, float)) or not math.isfinite(df) or df <= 0:
        raise ValueError(f"degrees of freedom must be a finite number > 0, got {df!r}")
    return float(df)


def t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df`` degrees of freedom."""
    df = _check_df(df)
    if math.isnan(t):
        raise ValueError("t must be a number, got nan")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_cdf(q, df) = p``).

    Closed forms for ``df = 1`` (Cauchy) and ``df = 2``; otherwise bisection on :func:`t_cdf`
    to an interval of 1e-13. ``t_quantile(0.975, 4) = 2.7764451...``.
    """
    df = _check_df(df)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p < 1.0:
        raise ValueError(f"p must be a probability in (0, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if df == 1.0:
        return math.tan(math.pi * (p - 0.5))
    if df == 2.0:
        return (2.0 * p - 1.0) / math.sqrt(2.0 * p * (1.0 - p))
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
        if hi > 1e12:
            raise ValueError(f"t quantile for p={p}, df={df} is out of range")
    while hi - lo > 1e-13 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# Intervals and verdicts


@dataclass(frozen=True)
class Interval:
    """Mean and Student-t interval of a sample of ``n`` values.

    ``sd`` is the sample standard deviation (``n - 1`` in the denominator), ``half_width`` is
    ``t(1 - alpha/2, n - 1) * sd / sqrt(n)``; with ``n < 2`` they and ``low`` / ``high`` are
    ``None`` (see :attr:`note`).
    """

    n: int
    mean: float | None
    sd: float | None
    half_width: float | None
    confidence: float = 0.95

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def note(self) -> str:
        """``""`` when the interval exists, otherwise why not (``"n=1: no interval"``)."""
        if self.n == 0:
            return "n=0: no values"
        return NO_INTERVAL if self.half_width is None else ""

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point; a missing interval overlaps everything."""
        if self.half_width is None or other.half_width is None:
            return True
        return self.low <= other.high and other.low <= self.high

    def to_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "half_width": self.half_width, "low": self.low,
                "high": self.high, "confidence": self.confidence, "note": self.note}  # fmt: skip


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_interval(values: Iterable[float], confidence: float = 0.95) -> Interval:
    """Mean and two-sided Student-t ``confidence`` interval of ``values``.

    Example::

        >>> iv = mean_interval([1.0, 2.0, 3.0])
        >>> round(iv.half_width, 6)  # t(0.975, 2) * 1 / sqrt(3)
        2.484138
    """
    confidence = _check_confidence(confidence)
    xs = [float(v) for v in values]
    if any(not math.isfinite(v) for v in xs):
        raise ValueError(f"values must be finite numbers, got {xs}")
    n = len(xs)
    if n == 0:
        return Interval(0, None, None, None, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(1, mean, None, None, confidence)
    sd = statistics.stdev(xs)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Interval(n, mean, sd, half, confidence)


def verdict(interval: Interval) -> str:
    """``"better"`` / ``"worse"`` when the interval of a difference excludes 0 (above / below),
    ``"not resolved"`` when it contains 0 or there is no interval (n < 2)."""
    if interval.half_width is None:
        return "not resolved"
    if interval.low > 0:
        return "better"
    if interval.high < 0:
        return "worse"
    return "not resolved"


def binomial_se(p: float, n: int) -> float:
    """Test-sampling standard error of an accuracy ``p`` (fraction) measured on ``n`` images:
    ``sqrt(p (1 - p) / n)`` (a fraction; times 100 for percentage points)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"accuracy must be a fraction in [0, 1], got {p!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of test images must be an int >= 1, got {n!r}")
    return math.sqrt(p * (1.0 - p) / n)


# ---------------------------------------------------------------------------------------------
# The comparison summary


@dataclass(frozen=True)
class VariantStats:
    """One variant over seeds: accuracies in percent, their interval, the test-sampling SE (pp)."""

    variant: str
    label: str
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    interval: Interval
    test_se: float | None = None

    def to_dict(self) -> dict:
        return {"variant": self.variant, "label": self.label, "seeds": list(self.seeds), "top1": list(self.values),
                "interval": self.interval.to_dict(), "test_se_pp": self.test_se}  # fmt: skip


@dataclass(frozen=True)
class PairedDifference:
    """``variant - baseline`` per shared seed (pp), the interval of its mean and the verdict."""

    variant: str
    baseline: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    interval: Interval
    verdict: str

    @property
    def resolvable_delta(self) -> float | None:
        """The smallest mean difference this comparison can resolve: the interval half-width."""
        return self.interval.half_width

    def to_dict(self) -> dict:
        return {"variant": self.variant, "baseline": self.baseline, "seeds": list(self.seeds),
                "differences_pp": list(self.differences), "interval": self.interval.to_dict(),
                "verdict": self.verdict, "resolvable_delta_pp": self.resolvable_delta}  # fmt: skip


@dataclass(frozen=True)
class Resolution:
    """Smallest resolvable delta over the comparisons (pp): the half-widths' min, median, max."""

    low: float | None
    median: float | None
    high: float | None
    note: str = ""

    def to_dict(self) -> dict:
        return {"min_pp": self.low, "median_pp": self.median, "max_pp": self.high, "note": self.note}


@dataclass(frozen=True)
class Summary:
    """Per-variant statistics and paired differences against ``baseline`` (the summary JSON)."""

    baseline: str
    confidence: float
    n_test: int | None
    variants: tuple[VariantStats, ...]
    differences: tuple[PairedDifference, ...]
    resolution: Resolution = field(default_factory=lambda: Resolution(None, None, None, "no comparisons"))

    @property
    def seeds(self) -> tuple[int, ...]:
        """Every seed that appears in any variant, sorted."""
        return tuple(sorted({s for v in self.variants for s in v.seeds}))

    def variant(self, name: str) -> VariantStats:
        for v in self.variants:
            if v.variant == name:
                return v
        raise ValueError(f"unknown variant {name!r}; variants: {', '.join(v.variant for v in self.variants)}")

    def difference(self, name: str) -> PairedDifference:
        for d in self.differences:
            if d.variant == name:
                return d
        raise ValueError(
            f"no paired difference for {name!r}; compared: {', '.join(d.variant for d in self.differences)}"
        )

    def to_dict(self) -> dict:
        return {"baseline": self.baseline, "confidence": self.confidence, "n_test": self.n_test,
                "seeds": list(self.seeds), "units": {"top1": "percent", "differences": "percentage points"},
                "variants": [v.to_dict() for v in self.variants],
                "differences": [d.to_dict() for d in self.differences],
                "resolution": self.resolution.to_dict()}  # fmt: skip


def _check_accuracies(name: str, by_seed: Mapping[int, float]) -> dict[int, float]:
    if not isinstance(by_seed, Mapping):
        raise ValueError(f"results for {name!r} must map seed -> accuracy, got {type(by_seed).__name__}")
    out = {}
    for seed, acc in by_seed.items():
        if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not 0.0 <= acc <= 1.0:
            raise ValueError(f"accuracy of {name!r} at seed {seed!r} must be a fraction in [0, 1], got {acc!r}")
        out[int(seed)] = float(acc)
    return out


def paired_difference(
    variant: Mapping[int, float],
    baseline: Mapping[int, float],
    *,
    names: tuple[str, str] = ("variant", "baseline"),
    confidence: float = 0.95,
) -> PairedDifference:
    """``variant - baseline`` in percentage points over the seeds both have (accuracies as
    fractions, ``{seed: accuracy}``), with the interval of the mean difference and the verdict."""
    v = _check_accuracies(names[0], variant)
    b = _check_accuracies(names[1], baseline)
    seeds = tuple(sorted(set(v) & set(b)))
    diffs = tuple(100.0 * (v[s] - b[s]) for s in seeds)
    iv = mean_interval(diffs, confidence)
    return PairedDifference(names[0], names[1], seeds, diffs, iv, verdict(iv))


def _resolution(diffs: Sequence[PairedDifference]) -> Resolution:
    halves = sorted(d.interval.half_width for d in diffs if d.interval.half_width is not None)
    if not diffs:
        return Resolution(None, None, None, "no comparisons")
    if not halves:
        return Resolution(None, None, None, NO_INTERVAL)
    return Resolution(halves[0], statistics.median(halves), halves[-1])


def summarize(
    results: Mapping[str, Mapping[int, float]],
    baseline: str = "none",
    *,
    n_test: int | None = None,
    confidence: float = 0.95,
    labels: Mapping[str, str] | None = None,
) -> Summary:
    """Statistics of a seeded comparison.

    Args:
        results: ``{variant: {seed: accuracy}}``, accuracies as fractions in ``[0, 1]``; the
            variants' order is kept.
        baseline: the variant the others are compared with (paired per seed). Default: ``'none'``.
        n_test: test images behind each accuracy, for the test-sampling SE. Default: ``None``
            (no SE).
        confidence: interval coverage. Default: ``0.95``.
        labels: readable names per variant (default: the variant itself).

    Example::

        >>> s = summarize({"none": {0: 0.80, 1: 0.82}, "gc": {0: 0.81, 1: 0.84}}, n_test=10000)
        >>> [round(d, 6) for d in s.difference("gc").differences]
        [1.0, 2.0]
    """
    if baseline not in results:
        raise ValueError(f"baseline {baseline!r} is not among the variants: {', '.join(results)}")
    confidence = _check_confidence(confidence)
    labels = dict(labels or {})
    checked = {name: _check_accuracies(name, by_seed) for name, by_seed in results.items()}
    stats = []
    for name, by_seed in checked.items():
        seeds = tuple(sorted(by_seed))
        values = tuple(100.0 * by_seed[s] for s in seeds)
        iv = mean_interval(values, confidence)
        se = None if n_test is None or iv.mean is None else 100.0 * binomial_se(iv.mean / 100.0, n_test)
        stats.append(VariantStats(name, labels.get(name, name), seeds, values, iv, se))
    diffs = tuple(
        paired_difference(by_seed, checked[baseline], names=(name, baseline), confidence=confidence)
        for name, by_seed in checked.items()
        if name != baseline
    )
    return Summary(baseline, confidence, n_test, tuple(stats), diffs, _resolution(diffs))
