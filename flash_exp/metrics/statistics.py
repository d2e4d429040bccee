"""Statistics over evaluation results: intervals over training seeds, paired differences to a
reference configuration, a verdict, and the seeds that would resolve a difference.

Pure functions of numbers (no torch, no files). The 95 % intervals are Student t intervals over
training seeds: ``mean ± t_{0.975, n-1} · sd / √n`` with the sample sd (``n - 1`` in the denominator).
Two configurations are compared *paired*: runs with the same training seed share the data order and
every draw of the step, so the difference is taken seed by seed and its interval is the t interval of
those differences.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

from flash_exp.metrics.registry import LOWER, arrow, directions

LEVEL = 0.95
BETTER, WORSE = "better", "worse"
MAX_SEEDS_SEARCHED = 10_000


@dataclass(frozen=True)
class Interval:
    """``mean`` of ``n`` values, their sample ``sd`` (None for one value) and the 95 % Student t interval
    ``[low, high]`` over them (None for one value: no spread to estimate)."""

    mean: float
    n: int
    sd: float | None
    low: float | None
    high: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2


def t_quantile(n: int, level: float = LEVEL) -> float:
    """``t_{(1+level)/2, n-1}``: the two-sided Student t quantile for ``n`` values (``n >= 2``)."""
    if n < 2:
        raise ValueError(f"n={n}: a t quantile needs at least 2 values")
    return float(student_t.ppf((1 + level) / 2, n - 1))


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean, sample sd and Student t interval of ``values`` (one per training seed)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Interval(mean, 1, None, None, None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n, level) * sd / math.sqrt(n)
    return Interval(mean, n, sd, mean - half, mean + half)


def seeds_to_resolve(mean: float, sd: float, level: float = LEVEL) -> int | None:
    """The smallest number of seeds ``n >= 2`` whose t interval of a mean difference ``mean`` at the sd of
    differences ``sd`` excludes zero: ``t_{(1+level)/2, n-1} · sd / √n < |mean|``, searched upwards from
    ``n = 2`` (the left side falls with ``n``). None when ``mean`` is 0 or no ``n`` up to 10 000 does."""
    if mean == 0 or not math.isfinite(mean) or not math.isfinite(sd):
        return None
    for n in range(2, MAX_SEEDS_SEARCHED + 1):
        if t_quantile(n, level) * sd / math.sqrt(n) < abs(mean):
            return n
    return None


def not_resolved(n: int) -> str:
    return f"not resolved with {n} seed{'s' if n != 1 else ''}"


def verdict(metric: str, interval: Interval) -> str:
    """``better`` or ``worse`` (the candidate against the reference) when the t interval of the paired
    differences (candidate - reference) excludes zero, in the metric's direction; else
    ``not resolved with n seeds``."""
    arrow(metric)  # refuses an unknown metric
    if interval.low is None or interval.high is None or interval.low <= 0 <= interval.high:
        return not_resolved(interval.n)
    lower = interval.high < 0
    return BETTER if lower == (directions()[metric] == LOWER) else WORSE


@dataclass(frozen=True)
class PairedComparison:
    """A candidate configuration against the reference on one metric: ``seeds`` (the training seeds both
    ran), ``differences`` (candidate - reference, seed by seed), their interval, the verdict and
    ``seeds_needed`` (None when there is no sd of differences, or the mean difference is 0)."""

    metric: str
    seeds: tuple[int, ...]
    differences: tuple[float, ...]
    interval: Interval
    verdict: str
    seeds_needed: int | None


def paired_comparison(metric: str, candidate: Mapping[int, float], reference: Mapping[int, float],
                      level: float = LEVEL) -> PairedComparison | None:
    """Pair ``candidate`` and ``reference`` ({training seed: score}) by seed; None without a common seed."""
    seeds = tuple(sorted(set(candidate) & set(reference)))
    if not seeds:
        return None
    differences = tuple(candidate[s] - reference[s] for s in seeds)
    interval = mean_interval(differences, level)
    needed = None if interval.sd is None else seeds_to_resolve(interval.mean, interval.sd, level)
    return PairedComparison(metric, seeds, differences, interval, verdict(metric, interval), needed)
