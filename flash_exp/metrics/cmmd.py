"""CMMD (Jayasumana et al. 2024, google-research/cmmd): the MMD between CLIP ViT-L/14@336 image
embeddings of the generated and the reference images, Gaussian RBF kernel (sigma 10), times 1000.

The embeddings are transformers' ``CLIPVisionModelWithProjection`` ``image_embeds`` of
``openai/clip-vit-large-patch14-336``, L2-normalised, on images cropped and resized to ``eval_res``
(:class:`~flash_exp.metrics.images.CenterCropResize`), then resized to 336 by clean-fid's "clean"
bicubic resize and normalised with the checkpoint's processor mean/std: the features go through the
same clean-fid pipeline (and reference cache) as FID's. The estimator is the reference's
``distance.mmd``: means over the full kernel matrices (their diagonals included).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flash_exp.metrics.features import FeatureExtractor
from flash_exp.metrics.fid import image_features, reference_features
from flash_exp.metrics.hashing import directory_sha256
from flash_exp.metrics.registry import Metric, MetricContext, MetricScorer, ScoreInput

SIGMA = 10.0
SCALE = 1000.0


def gaussian_mmd(x: np.ndarray, y: np.ndarray, sigma: float = SIGMA, scale: float = SCALE) -> float:
    """``scale`` x MMD² of embeddings (n, D) and (m, D) under ``exp(-|a-b|² / (2 sigma²))``, each kernel
    term the mean over its full matrix (google-research/cmmd ``distance.mmd``), in float64."""
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    gamma = 1.0 / (2 * sigma**2)

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.exp(-gamma * torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist") ** 2).mean()

    return float(scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y)))


class ClipEmbedding(nn.Module):
    """(N, 3, S, S) in [0, 255] -> (N, D) L2-normalised CLIP ``image_embeds``."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb = self.model(pixel_values=(x - self.mean) / self.std).image_embeds.float()
        return emb / torch.linalg.norm(emb, dim=-1, keepdim=True)


def clip_embedding_extractor(weights: str | Path, device: str | torch.device = "cpu",
                             memo_dir: Path | None = None) -> FeatureExtractor:
    """The CLIP vision tower with projection in the transformers directory ``weights`` (model and
    processor config), as a clean-fid feature model; input size: the processor's crop size."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    weights = Path(weights).expanduser()
    processor = CLIPImageProcessor.from_pretrained(weights)
    model = CLIPVisionModelWithProjection.from_pretrained(weights).eval()
    module = ClipEmbedding(model, processor.image_mean, processor.image_std).to(device).eval()
    return FeatureExtractor("clip-embedding", module, int(processor.crop_size["height"]),
                            directory_sha256(weights, memo_dir), torch.device(device))


class ReferenceDistance(MetricScorer):
    """A distance between generated and reference features of one extractor (loaded on first use);
    the reference features are cached like FID's."""

    def __init__(self, metric: Metric, context: MetricContext, load, distance) -> None:
        self.metric, self.context, self._load, self._distance = metric, context, load, distance
        self._extractor: FeatureExtractor | None = None
        self._weights_sha256 = directory_sha256(Path(str(context.weights)).expanduser(), context.cache_dir)

    def describe(self) -> dict[str, Any]:
        return {**self.metric.pinned, "weights_sha256": self._weights_sha256}

    def score(self, batch: ScoreInput) -> dict[str, float | None]:
        if self._extractor is None:
            self._extractor = self._load(self.context.weights, self.context.device, self.context.cache_dir)
        ref = reference_features(self.context.reference_files, self._extractor, batch.eval_res,
                                 self.context.cache_dir, {**self.context.reference_key, "metric": self.metric.name},
                                 batch.batch_size, batch.num_workers)
        feats = image_features(batch.files, self._extractor, batch.eval_res, batch.batch_size, batch.num_workers,
                               description=self.metric.name)
        return {self.metric.name: self._distance(feats, ref)}


def build(metric: Metric, context: MetricContext) -> ReferenceDistance:
    return ReferenceDistance(metric, context, clip_embedding_extractor, lambda f, ref: gaussian_mmd(ref.features, f))
