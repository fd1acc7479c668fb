"""Claims decided from runs: the t interval's coverage by Monte Carlo, the three outcomes, pairing."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gapscope.experiments.statistics import (
    Interval,
    all_of,
    any_of,
    decide,
    log_ratio,
    mean_interval,
    paired_difference,
    paired_values,
)


@pytest.mark.parametrize("runs", [2, 3, 5, 12])
def test_t_interval_covers_the_mean_at_its_level(runs):
    """Over 4,000 normal samples the 95% interval holds the true mean 95% of the time, within 4
    binomial standard errors (0.014), at every run count the verdicts use."""
    rng = np.random.default_rng(runs)
    trials = 4000
    hits = sum(
        (i.low <= 1.5 <= i.high) for i in (mean_interval(rng.normal(1.5, 0.3, runs)) for _ in range(trials))
    )
    se = math.sqrt(0.95 * 0.05 / trials)
    assert abs(hits / trials - 0.95) < 4 * se


def test_one_run_decides_nothing():
    one = mean_interval([0.7])
    assert (one.low, one.high) == (-math.inf, math.inf) and one.runs == 1
    assert decide(one, above=0) is None and "no interval" in one.text()
    assert decide(mean_interval([]), above=0) is False  # nothing measured: not supported


def test_decide_three_outcomes():
    interval = Interval(1.0, 0.8, 1.2, 5)
    assert decide(interval, above=0.5) is True
    assert decide(interval, above=1.3) is False
    assert decide(interval, above=1.0) is None
    assert decide(interval, below=1.5) is True and decide(interval, below=0.7) is False
    assert decide(interval, above=0.67, below=1.5) is True
    assert decide(interval, above=0.9, below=1.5) is None
    assert decide(interval, above=1.3, below=2) is False
    with pytest.raises(ValueError, match="needs a bound"):
        decide(interval)


def test_all_of_and_any_of():
    assert all_of([True, True]) is True and all_of([True, None]) is None and all_of([None, False]) is False
    assert any_of([False, True]) is True and any_of([False, None]) is None and any_of([False, False]) is False


def test_paired_values_pair_by_seed():
    table = pd.DataFrame(
        {"variant": ["a", "a", "a", "b", "b"], "seed": [0, 1, 2, 2, 0], "final": [1.0, 2.0, 3.0, 6.0, 2.0]}
    )
    a, b = paired_values(table, "variant", "a", "b", "final")
    assert list(a) == [1.0, 3.0] and list(b) == [2.0, 6.0]  # seed 1 has no partner
    ratio = log_ratio(a, b)
    assert ratio.estimate == pytest.approx(0.5) and ratio.low == pytest.approx(0.5)  # no spread
    with pytest.raises(ValueError, match="several rows per seed"):
        paired_values(pd.concat([table, table]), "variant", "a", "b", "final")
    with pytest.raises(ValueError, match="positive"):
        log_ratio([1.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="as many values"):
        paired_difference([1.0], [1.0, 2.0])


def test_pairing_removes_the_shared_noise():
    """A small effect under a large seed effect: pairing decides it, separate means do not."""
    rng = np.random.default_rng(0)
    shared = rng.normal(0, 1, 5)
    a, b = shared + 0.1 + rng.normal(0, 0.01, 5), shared
    assert decide(paired_difference(a, b), above=0) is True
    separate = mean_interval(a).low - mean_interval(b).high
    assert separate < 0  # the two intervals overlap


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=20),
    st.floats(-100, 100),
    st.floats(0.1, 10),
)
def test_interval_is_affine_equivariant(values, shift, scale):
    """The interval holds its estimate, and moves and stretches with the data."""
    base = mean_interval(values)
    moved = mean_interval([scale * v + shift for v in values])
    assert base.low <= base.estimate <= base.high
    tol = 1e-6 * (1 + abs(shift) + scale * max(abs(v) for v in values))
    assert moved.estimate == pytest.approx(scale * base.estimate + shift, abs=tol)
    assert moved.high - moved.low == pytest.approx(scale * (base.high - base.low), abs=tol)


def test_level_is_checked():
    with pytest.raises(ValueError, match="level"):
        mean_interval([1.0, 2.0], level=1.5)


def test_log_slope_interval_covers_the_true_exponent():
    """y = 3 x^-0.5 with lognormal noise on every draw: the 95% interval holds -0.5 in 95% of 2,000
    data sets (within 4 binomial standard errors); one value of x decides nothing."""
    from gapscope.experiments.statistics import log_slope_interval

    rng = np.random.default_rng(7)
    x = np.repeat([32.0, 64.0, 128.0, 256.0], 3)
    trials, hits = 2000, 0
    for _ in range(trials):
        y = 3 * x**-0.5 * np.exp(rng.normal(0, 0.2, x.size))
        interval = log_slope_interval(x, y)
        hits += interval.low <= -0.5 <= interval.high
    assert abs(hits / trials - 0.95) < 4 * math.sqrt(0.95 * 0.05 / trials)
    flat = log_slope_interval([8.0, 8.0, 8.0], [1.0, 2.0, 3.0])
    assert math.isnan(flat.estimate) and decide(flat, below=0) is False  # no slope: nothing measured
    with pytest.raises(ValueError, match="as many x as y"):
        log_slope_interval([1.0, 2.0], [1.0])
