"""Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020).

Each real (reference) feature owns a ball whose radius is the distance to its ``nearest_k``-th nearest
other real feature; each generated feature one of the distance to its ``nearest_k``-th nearest other
generated feature (Euclidean distances; strict ``<`` comparisons, as the ``prdc`` package):

* precision: the fraction of generated features inside some real ball (quality);
* recall: the fraction of real features inside some generated ball (diversity);
* density: the mean number of real balls holding a generated feature, divided by ``nearest_k``;
* coverage: the fraction of real balls holding at least one generated feature.

Distances are computed in float64 blocks of rows, so a 30k x 40k comparison never holds the whole
matrix. The real radii depend on the reference only: :func:`nearest_neighbour_radii` computes them once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

NEAREST_K = 5
PRDC_SCORES = ("precision", "recall", "density", "coverage")
BLOCK_ROWS = 1024


def _distance_blocks(a: np.ndarray, b: np.ndarray, device: torch.device | str = "cpu"
                     ) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, Euclidean distances (rows, M) of a block of ``a``'s rows to every row of ``b``)."""
    tb = torch.as_tensor(b, dtype=torch.float64, device=device)
    for start in range(0, a.shape[0], BLOCK_ROWS):
        ta = torch.as_tensor(a[start:start + BLOCK_ROWS], dtype=torch.float64, device=device)
        yield start, torch.cdist(ta, tb, compute_mode="use_mm_for_euclid_dist").cpu().numpy()


def nearest_neighbour_radii(features: np.ndarray, nearest_k: int = NEAREST_K,
                            device: torch.device | str = "cpu") -> np.ndarray:
    """(N,) distance of each feature to its ``nearest_k``-th nearest other feature of the same set."""
    if features.shape[0] <= nearest_k:
        raise ValueError(f"need more than nearest_k={nearest_k} features, got {features.shape[0]}")
    radii = np.empty(features.shape[0])
    for start, block in _distance_blocks(features, features, device):
        radii[start:start + block.shape[0]] = np.partition(block, nearest_k, axis=1)[:, nearest_k]
    return radii


def precision_recall_density_coverage(features: np.ndarray, reference: np.ndarray, nearest_k: int = NEAREST_K,
                                      reference_radii: np.ndarray | None = None,
                                      device: torch.device | str = "cpu") -> dict[str, float]:
    """``{"precision", "recall", "density", "coverage"}`` of generated ``features`` (N, D) against
    ``reference`` (M, D); ``reference_radii`` (M,) are computed here when not given."""
    real_radii = reference_radii if reference_radii is not None else nearest_neighbour_radii(
        reference, nearest_k, device)
    fake_radii = nearest_neighbour_radii(features, nearest_k, device)
    inside_real = np.zeros(features.shape[0], dtype=np.int64)  # per generated feature: real balls holding it
    covered = np.zeros(reference.shape[0], dtype=bool)  # per real: holds some generated feature
    recalled = np.zeros(reference.shape[0], dtype=bool)  # per real: inside some generated ball
    for start, block in _distance_blocks(reference, features, device):  # (real rows, N)
        rows = slice(start, start + block.shape[0])
        in_real_ball = block < real_radii[rows, None]
        inside_real += in_real_ball.sum(axis=0)
        covered[rows] = block.min(axis=1) < real_radii[rows]
        recalled[rows] = (block < fake_radii[None, :]).any(axis=1)
    return {"precision": float((inside_real > 0).mean()), "recall": float(recalled.mean()),
            "density": float(inside_real.mean() / nearest_k), "coverage": float(covered.mean())}
