"""Verdict statistics over seeds: small pure functions on NumPy arrays.

Every claim compares arms that share their seeds (a seed fixes the initial parameters and the
task sequence of every arm: common random numbers), so a comparison is *paired*: the per-seed
differences d_s = metric(arm A, seed s) − metric(arm B, seed s) are summarized by their mean and
a two-sided Student-t confidence interval

    d̄ ± t_{1−α/2, n−1} · s_d / √n,      s_d the sample standard deviation (ddof 1),

which is exact when the differences are normal and the usual choice for a handful of seeds (a
percentile bootstrap, `bootstrap_interval`, has only n^n resamples and under-covers badly at
n = 3). A comparison PASSes when the interval excludes zero on the side the paper predicts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95

PASS = "PASS"
OPPOSITE = "OPPOSITE"  # the interval excludes zero on the other side
INCONCLUSIVE = "INCONCLUSIVE"  # the interval contains zero
TOO_FEW_SEEDS = "TOO FEW SEEDS"  # fewer than two finite values: no interval


def t_quantile(probability: float, dof: int) -> float:
    """The `probability` quantile of Student's t with `dof` degrees of freedom."""
    if dof < 1:
        raise ValueError(f"t_quantile needs dof >= 1, got {dof}")
    from scipy import stats  # noqa: PLC0415 - scipy comes with scikit-learn

    return float(stats.t.ppf(probability, dof))


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with a two-sided confidence interval [low, high] over n values."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def format(self, digits: int = 3) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        if self.n < 2 or not math.isfinite(self.half_width):
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.half_width:.{max(digits - 1, 1)}g}"


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    return array[np.isfinite(array)]


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean ± t_{(1+c)/2, n−1}·s/√n over the finite values (NaN bounds with fewer than two)."""
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def bootstrap_interval(
    values: Sequence[float],
    confidence: float = CONFIDENCE,
    resamples: int = 10_000,
    seed: int = 0,
) -> Interval:
    """Mean with the percentile-bootstrap interval of the mean (resampling the values with
    replacement `resamples` times from ``np.random.default_rng(seed)``)."""
    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if n < 2:
        return Interval(float(x.mean()), math.nan, math.nan, n)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(float(x.mean()), float(low), float(high), n)


def paired_differences(a: dict[int, float], b: dict[int, float]) -> np.ndarray:
    """a[s] − b[s] over the seeds s both have, in seed order."""
    seeds = sorted(set(a) & set(b))
    return np.asarray([a[s] - b[s] for s in seeds], dtype=np.float64)


def direction_verdict(interval: Interval, direction: int) -> str:
    """PASS when the interval lies strictly on the side of zero `direction` (+1 or −1) names."""
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if interval.n < 2 or not (math.isfinite(interval.low) and math.isfinite(interval.high)):
        return TOO_FEW_SEEDS
    low, high = direction * interval.low, direction * interval.high
    low, high = min(low, high), max(low, high)
    if low > 0:
        return PASS
    if high < 0:
        return OPPOSITE
    return INCONCLUSIVE


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a row or a claim made of several comparisons (their verdicts): PASS when all
    pass, else 'PARTIAL k/m' when k of the m pass, else the verdict they all share, or 'NOT SHOWN'
    when they differ."""
    verdicts = list(verdicts)
    if not verdicts:
        return INCONCLUSIVE
    passed = sum(v == PASS for v in verdicts)
    if passed == len(verdicts):
        return PASS
    if passed:
        return f"PARTIAL {passed}/{len(verdicts)}"
    return verdicts[0] if len(set(verdicts)) == 1 else "NOT SHOWN"
