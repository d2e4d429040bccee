"""FID with clean-fid ("clean" mode): features, Gaussian statistics, cached reference statistics.

Every image, real or generated, goes through clean-fid's ``get_files_features`` with

1. ``custom_image_tranform`` = :class:`~flash_exp.metrics.images.CenterCropResize` (``eval_res``),
2. clean-fid's "clean" resize (PIL bicubic per channel in float32, no quantisation) to the
   extractor's input size (299 for Inception: exactly clean-fid's default resizer),
3. the extractor (:mod:`flash_exp.metrics.features`).

The distance is clean-fid's ``frechet_distance`` on (mean, covariance) of the features. Reference
statistics live in ``<cache_dir>/fid_stats/<key>.npz`` under a sha256 of everything that changes them,
beside the reference features themselves (``<key>.features.npy``, for KID and precision/recall) and
a JSON file that spells that key out. These are the building blocks of clean-fid's
``compute_fid``, used directly because its reference-statistics branch reads and writes inside the
installed package and downloads what is missing; the extractor is handed to them as clean-fid's
feature model, exactly as ``compute_fid(custom_feat_extractor=...)`` does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cleanfid import fid as cleanfid_fid
from cleanfid.resize import make_resizer

from flash_exp.files import atomic_path
from flash_exp.metrics.features import INCEPTION_SIZE, FeatureExtractor
from flash_exp.metrics.hashing import sha256_json
from flash_exp.metrics.images import RESIZE_POLICY, CenterCropResize

log = logging.getLogger(__name__)

CLEANFID_MODE = "clean"
STATS_DIR = "fid_stats"


@dataclass
class GaussianStats:
    """Mean ``mu`` (D,) and covariance ``sigma`` (D, D) of ``count`` feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> GaussianStats:
        """Statistics of ``features`` (N, D), N >= 2, computed as clean-fid does (np.mean, np.cov)."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(f"need at least 2 feature vectors (N, D), got shape {features.shape}")
        return cls(np.mean(features, axis=0), np.cov(features, rowvar=False), int(features.shape[0]))

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            np.savez(tmp, mu=self.mu, sigma=self.sigma, count=self.count)

    @classmethod
    def load(cls, path: Path) -> GaussianStats:
        with np.load(path) as data:
            return cls(data["mu"], data["sigma"], int(data["count"]))


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
    """FID between two Gaussians, by clean-fid's ``frechet_distance``."""
    return float(cleanfid_fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma))


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (N_a, D) and (N_b, D)."""
    return frechet_distance(GaussianStats.from_features(features_a), GaussianStats.from_features(features_b))


def image_features(files: Sequence[Path], extractor: FeatureExtractor, eval_res: int, batch_size: int = 32,
                   num_workers: int = 0, description: str = "features") -> np.ndarray:
    """Features (N, D) of the image ``files`` in order, through clean-fid's feature pipeline."""
    size = extractor.input_size
    resize = None if size == INCEPTION_SIZE else make_resizer("PIL", False, "bicubic", (size, size))
    with torch.no_grad():
        return cleanfid_fid.get_files_features(
            [str(f) for f in files], model=extractor.module, num_workers=num_workers, batch_size=batch_size,
            device=extractor.device, mode=CLEANFID_MODE, custom_fn_resize=resize,
            custom_image_tranform=CenterCropResize(eval_res), description=description, verbose=True,
        )


@dataclass
class ReferenceFeatures:
    """The reference set's ``features`` (M, D) and their Gaussian ``stats``."""

    features: np.ndarray
    stats: GaussianStats


def reference_features(files: Sequence[Path], extractor: FeatureExtractor, eval_res: int, cache_dir: Path,
                       key: dict[str, Any], batch_size: int = 32, num_workers: int = 0) -> ReferenceFeatures:
    """Features and statistics of the reference images ``files``, computed once and then read from the cache.

    ``key`` must describe the reference set (e.g. its name and a hash of its file list); the
    extractor, ``eval_res``, the resize policy and the clean-fid mode are added to it here.
    """
    full_key = {**key, "features": extractor.describe(), "eval_res": eval_res,
                "resize": RESIZE_POLICY, "cleanfid_mode": CLEANFID_MODE}
    digest = sha256_json(full_key)
    directory = Path(cache_dir) / STATS_DIR
    path, features_path = directory / f"{digest}.npz", directory / f"{digest}.features.npy"
    if path.is_file() and features_path.is_file():
        log.info("reference features and FID statistics from %s", path)
        return ReferenceFeatures(np.load(features_path), GaussianStats.load(path))
    log.info("computing reference features of %d images -> %s", len(files), path)
    features = image_features(files, extractor, eval_res, batch_size, num_workers, description="reference")
    stats = GaussianStats.from_features(features)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(features_path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, features)
    stats.save(path)
    (directory / f"{digest}.json").write_text(json.dumps(full_key, indent=2, sort_keys=True) + "\n")
    return ReferenceFeatures(features, stats)
