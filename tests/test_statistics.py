"""Statistics over results: t intervals, paired differences, verdicts and seeds needed, against
scipy.stats and the t formula written out."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from flash_exp.metrics.statistics import (
    arrow,
    mean_interval,
    paired_comparison,
    seeds_to_resolve,
    verdict,
)

FID_MIXTURE = [4.46, 5.20, 4.97]  # three training seeds of one configuration
FID_UNIFORM = [5.86, 4.12, 21.74]


@pytest.mark.parametrize("values", [FID_MIXTURE, FID_UNIFORM, [3.25, 3.64, 3.86, 3.51, 3.64], [1.0, 2.0]])
def test_interval_equals_scipy_t_interval(values):
    got = mean_interval(values)
    sem = scipy.stats.sem(values)  # sd with n - 1, over sqrt(n)
    low, high = scipy.stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sem)
    assert got.n == len(values) and got.mean == pytest.approx(np.mean(values), abs=1e-12)
    assert got.sd == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    assert (got.low, got.high) == (pytest.approx(low, rel=1e-12), pytest.approx(high, rel=1e-12))


def test_one_value_has_no_interval():
    got = mean_interval([4.2])
    assert (got.mean, got.n, got.sd, got.low, got.high, got.half_width) == (4.2, 1, None, None, None, None)


def test_paired_interval_is_the_t_interval_of_the_seed_by_seed_differences():
    candidate = {0: 5.86, 1: 4.12, 2: 21.74, 3: 7.0}  # seed 3 has no partner: left out
    reference = {0: 4.46, 1: 5.20, 2: 4.97}
    got = paired_comparison("fid", candidate, reference)
    diffs = [5.86 - 4.46, 4.12 - 5.20, 21.74 - 4.97]
    low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(diffs), scale=scipy.stats.sem(diffs))
    assert got.seeds == (0, 1, 2) and got.differences == pytest.approx(diffs)
    assert (got.interval.low, got.interval.high) == (pytest.approx(low), pytest.approx(high))
    assert got.verdict == "not resolved with 3 seeds"  # uniform minus mixture changes sign between seeds


@pytest.mark.parametrize(("metric", "diffs", "expected"), [
    ("fid", [-1.0, -1.2, -0.8], "better"),  # lower FID
    ("fid", [1.0, 1.2, 0.8], "worse"),
    ("fid", [1.0, -1.2, 0.8], "not resolved with 3 seeds"),
    ("clip_score", [0.01, 0.012, 0.008], "better"),  # higher CLIP
    ("recall", [-0.1, -0.12, -0.08], "worse"),
    ("fid", [-2.0], "not resolved with 1 seed"),  # one pair: no spread, no verdict
])
def test_verdict_follows_the_metric_direction(metric, diffs, expected):
    assert verdict(metric, mean_interval(diffs)) == expected


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="metric='psnr', allowed"):
        arrow("psnr")


def test_seeds_needed_is_the_smallest_n_the_t_formula_resolves():
    mean, sd = 0.9, 2.0
    def resolves(n: int) -> bool:  # t_{0.975, n-1} * sd / sqrt(n) < |mean|
        return scipy.stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < abs(mean)
    expected = next(n for n in range(2, 1000) if resolves(n))
    assert seeds_to_resolve(mean, sd) == expected
    assert resolves(expected) and not resolves(expected - 1)
    assert expected == 22  # t(0.975, 21) = 2.080 -> 0.887 < 0.9; t(0.975, 20) = 2.086 -> 0.910
    assert seeds_to_resolve(0.0, 1.0) is None and seeds_to_resolve(-0.9, 2.0) == expected


def test_paired_comparison_reports_the_seeds_needed_at_the_observed_spread():
    diffs = [1.0, -1.2, 0.8, 2.0]
    got = paired_comparison("fid", dict(enumerate(np.add(diffs, 5.0))), dict.fromkeys(range(4), 5.0))
    assert got.seeds_needed == seeds_to_resolve(float(np.mean(diffs)), float(np.std(diffs, ddof=1)))
    assert got.seeds_needed > 4
