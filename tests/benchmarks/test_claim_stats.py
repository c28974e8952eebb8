"""Verdict statistics of `benchmarks.claims.stats` against NumPy references."""

import math

import numpy as np
import pytest

from benchmarks.claims import stats

# Two-sided 95% Student-t quantiles t_{0.975, dof} (standard tables).
T_975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105, 9: 2.262157163, 29: 2.045229642}


@pytest.mark.parametrize("dof", sorted(T_975))
def test_t_quantile_matches_the_table(dof):
    assert stats.t_quantile(0.975, dof) == pytest.approx(T_975[dof], abs=1e-8)
    assert stats.t_quantile(0.5, dof) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
def test_t_interval_matches_a_numpy_reference(n):
    x = np.random.default_rng(n).normal(1.0, 2.0, size=n)
    half = T_975[n - 1] * np.sqrt(np.sum((x - x.mean()) ** 2) / (n - 1)) / np.sqrt(n)
    interval = stats.t_interval(x)
    assert interval.n == n
    assert interval.mean == pytest.approx(x.mean(), rel=1e-12)
    assert interval.low == pytest.approx(x.mean() - half, rel=1e-8)
    assert interval.high == pytest.approx(x.mean() + half, rel=1e-8)


def test_t_interval_covers_the_mean_at_the_stated_rate():
    """95% of intervals from normal samples of 3 contain the true mean (±1.5% over 4,000)."""
    rng = np.random.default_rng(0)
    intervals = [stats.t_interval(rng.normal(0.3, 1.0, 3)) for _ in range(4000)]
    covered = [iv.low <= 0.3 <= iv.high for iv in intervals]
    assert abs(np.mean(covered) - 0.95) < 0.015


def test_t_interval_skips_non_finite_values_and_needs_two():
    interval = stats.t_interval([1.0, np.nan, 3.0, np.inf])
    assert interval.n == 2 and interval.mean == 2.0
    one = stats.t_interval([4.0, np.nan])
    assert one.n == 1 and one.mean == 4.0 and math.isnan(one.low)
    assert stats.t_interval([]).n == 0 and math.isnan(stats.t_interval([]).mean)


def test_bootstrap_interval_matches_a_numpy_reference():
    x = np.array([0.2, 0.5, 0.9, 1.4, 0.1])
    rng = np.random.default_rng(7)
    means = x[rng.integers(0, 5, size=(2000, 5))].mean(axis=1)
    low, high = np.quantile(means, [0.05, 0.95])
    interval = stats.bootstrap_interval(x, confidence=0.9, resamples=2000, seed=7)
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))
    assert interval.mean == pytest.approx(x.mean())


def test_paired_differences_use_the_shared_seeds_in_order():
    a = {2: 5.0, 0: 1.0, 1: 2.0}
    b = {0: 0.5, 2: 1.0, 3: 9.0}
    np.testing.assert_array_equal(stats.paired_differences(a, b), [0.5, 4.0])


@pytest.mark.parametrize(
    "low, high, direction, expected",
    [
        (0.1, 0.5, 1, stats.PASS),
        (-0.5, -0.1, -1, stats.PASS),
        (-0.5, -0.1, 1, stats.OPPOSITE),
        (0.1, 0.5, -1, stats.OPPOSITE),
        (-0.1, 0.5, 1, stats.INCONCLUSIVE),
        (0.0, 0.5, 1, stats.INCONCLUSIVE),
        (-0.5, 0.0, 1, stats.INCONCLUSIVE),  # touching zero is not the other side
        (-0.1, 0.5, -1, stats.INCONCLUSIVE),  # an interval around zero, either direction
        (-0.5, 0.1, -1, stats.INCONCLUSIVE),
    ],
)
def test_direction_verdict(low, high, direction, expected):
    interval = stats.Interval((low + high) / 2, low, high, 3)
    assert stats.direction_verdict(interval, direction) == expected


def test_direction_verdict_needs_an_interval():
    """Two seeds are enough for a verdict; one seed, or bounds that overflowed, are not; a t
    quantile needs a degree of freedom."""
    assert stats.direction_verdict(stats.t_interval([1.0]), 1) == stats.TOO_FEW_SEEDS
    assert stats.direction_verdict(stats.Interval(1.0, 0.5, 1.5, 2), 1) == stats.PASS
    unbounded = stats.Interval(0.0, -math.inf, math.inf, 3)
    assert stats.direction_verdict(unbounded, 1) == stats.TOO_FEW_SEEDS
    with pytest.raises(ValueError, match="t_quantile needs dof >= 1, got 0"):
        stats.t_quantile(0.975, 0)
    with pytest.raises(ValueError):
        stats.direction_verdict(stats.Interval(0, 0, 0, 3), 0)


def test_combine():
    assert stats.combine([stats.PASS, stats.PASS]) == stats.PASS
    assert stats.combine([stats.PASS, stats.INCONCLUSIVE, stats.OPPOSITE]) == "PARTIAL 1/3"
    assert stats.combine([stats.OPPOSITE, stats.OPPOSITE]) == stats.OPPOSITE
    assert stats.combine([stats.OPPOSITE, stats.INCONCLUSIVE]) == "NOT SHOWN"
    assert stats.combine([]) == stats.INCONCLUSIVE


def test_interval_format():
    assert stats.Interval(0.5, 0.4, 0.6, 3).format() == "0.5 ± 0.1"
    assert stats.Interval(0.5, 0.5 - 0.1234, 0.5 + 0.1234, 3).format() == "0.5 ± 0.12"
    assert stats.Interval(0.5, math.nan, math.nan, 1).format() == "0.5"
    assert stats.Interval(math.nan, math.nan, math.nan, 0).format() == "n/a"
