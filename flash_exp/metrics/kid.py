"""KID: the unbiased polynomial-kernel MMD² between two feature sets, over random subsets.

Kernel ``k(x, y) = (x·y / d + 1) ** degree`` (d: feature dimension; degree 3 as in Bińkowski et al.
2018). Each of ``num_subsets`` subsets draws ``m = min(n_a, n_b, max_subset_size)`` rows of each set
without replacement, the reference first, with ``numpy.random.RandomState(seed).choice``: for a
given seed the subsets, and hence the mean, are those of clean-fid's ``kernel_distance`` after
``np.random.seed(seed)``. The standard deviation over the subsets is the population one (ddof 0),
as torchmetrics' ``KernelInceptionDistance`` reports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KidScore:
    """``mean``: KID, the mean of the subsets' MMD² values; ``std``: their standard deviation (ddof 0)."""

    mean: float
    std: float


def polynomial_mmd2(x: np.ndarray, y: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD² of (m, D) and (m, D) features under the polynomial kernel (diagonals excluded)."""
    m, d = x.shape
    k_xx = (x @ x.T / d + 1) ** degree
    k_yy = (y @ y.T / d + 1) ** degree
    k_xy = (x @ y.T / d + 1) ** degree
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / m**2)


def kernel_inception_distance(features: np.ndarray, reference: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, degree: int = 3, seed: int = 0) -> KidScore:
    """KID of ``features`` (N, D) against ``reference`` (M, D) over ``num_subsets`` seeded subsets."""
    if features.ndim != 2 or reference.ndim != 2 or features.shape[1] != reference.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {features.shape} and {reference.shape}")
    m = min(features.shape[0], reference.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 features, got {m}")
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(num_subsets):
        x = reference[rng.choice(reference.shape[0], m, replace=False)]
        y = features[rng.choice(features.shape[0], m, replace=False)]
        values.append(polynomial_mmd2(x.astype(np.float64), y.astype(np.float64), degree))
    return KidScore(float(np.mean(values)), float(np.std(values)))
