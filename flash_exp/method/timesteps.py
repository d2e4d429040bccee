"""The distribution pi over the K teacher-timestep indices, and drawing from it.

Index 0 is the noisiest timestep of the K-step teacher schedule (t = 999 with trailing spacing) and
index K-1 the least noisy. The paper's mixture puts M Gaussian bumps at indices j * (K // M).
"""

from __future__ import annotations

import torch


def mode_indices(k: int, num_modes: int) -> list[int]:
    """Indices of the mixture modes: j * (K // M) for j < M (0, 8, 16, 24 for K=32, M=4)."""
    return [j * (k // num_modes) for j in range(num_modes)]


def mixture_distribution(k: int, mode_probs: list[float], variance: float) -> torch.Tensor:
    """p(i) proportional to sum_j mode_probs[j] * exp(-(i - loc_j)^2 / variance), shape (K,), float64."""
    index = torch.arange(k, dtype=torch.float64)
    locs = torch.tensor(mode_indices(k, len(mode_probs)), dtype=torch.float64)
    weights = torch.tensor(mode_probs, dtype=torch.float64)
    bumps = torch.exp(-((index[:, None] - locs[None, :]) ** 2) / variance)
    p = (bumps * weights[None, :]).sum(dim=1)
    return p / p.sum()


def modes_only_distribution(k: int, mode_probs: list[float]) -> torch.Tensor:
    """All the mass on the mode indices themselves, with the phase's mode probabilities. Shape (K,)."""
    p = torch.zeros(k, dtype=torch.float64)
    for loc, prob in zip(mode_indices(k, len(mode_probs)), mode_probs, strict=True):
        p[loc] += prob
    return p / p.sum()


def gaussian_distribution(k: int, mean: float | None = None, variance: float | None = None) -> torch.Tensor:
    """One bump exp(-(i - mean)^2 / variance) over the index (the mixture components' form),
    centred at K/2 with variance K by default. Shape (K,)."""
    mean = k / 2 if mean is None else mean
    variance = float(k) if variance is None else variance
    index = torch.arange(k, dtype=torch.float64)
    p = torch.exp(-((index - mean) ** 2) / variance)
    return p / p.sum()


def uniform_distribution(k: int) -> torch.Tensor:
    return torch.full((k,), 1.0 / k, dtype=torch.float64)


def timestep_distribution(
    kind: str,
    k: int,
    mode_probs: list[float],
    variance: float,
    gaussian_mean: float | None = None,
    gaussian_variance: float | None = None,
) -> torch.Tensor:
    """Probabilities over the K indices for one phase, shape (K,), float64, summing to 1."""
    if kind == "mixture":
        return mixture_distribution(k, mode_probs, variance)
    if kind == "modes":
        return modes_only_distribution(k, mode_probs)
    if kind == "gaussian":
        return gaussian_distribution(k, gaussian_mean, gaussian_variance)
    if kind == "uniform":
        return uniform_distribution(k)
    raise ValueError(f"unknown timestep distribution {kind!r}")


def sample_indices(
    probs: torch.Tensor, batch_size: int, per_sample: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw start indices, shape (B,), int64. One shared index per batch unless ``per_sample``."""
    n = batch_size if per_sample else 1
    idx = torch.multinomial(probs.float().cpu(), n, replacement=True, generator=generator)
    return idx.expand(batch_size).clone() if not per_sample else idx
