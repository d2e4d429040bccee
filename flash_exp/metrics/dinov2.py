"""FD-DINOv2 (Stein et al. 2023, layer6ai-labs/dgm-eval): the Fréchet distance between DINOv2 ViT-L/14
features of the generated and the reference images, through FID's own code path.

Features: transformers' ``Dinov2Model`` ``pooler_output`` of ``facebook/dinov2-large`` (the CLS token
after the final layer norm, what dgm-eval's encoder returns from the torch.hub model), on images
cropped and resized to ``eval_res``, then to 224 by clean-fid's "clean" bicubic resize and
normalised with the ImageNet mean/std. Statistics, reference cache and distance are FID's
(:mod:`flash_exp.metrics.fid`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from flash_exp.metrics.cmmd import ReferenceDistance
from flash_exp.metrics.features import FeatureExtractor
from flash_exp.metrics.fid import GaussianStats, frechet_distance
from flash_exp.metrics.hashing import directory_sha256
from flash_exp.metrics.registry import Metric, MetricContext

INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoCls(nn.Module):
    """(N, 3, S, S) in [0, 255] -> (N, D) DINOv2 CLS features after the final layer norm."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=(x - self.mean) / self.std).pooler_output.float()


def dinov2_extractor(weights: str | Path, device: str | torch.device = "cpu",
                     memo_dir: Path | None = None) -> FeatureExtractor:
    """The DINOv2 model in the transformers directory ``weights`` as a clean-fid feature model (224 px)."""
    from transformers import Dinov2Model

    weights = Path(weights).expanduser()
    module = DinoCls(Dinov2Model.from_pretrained(weights).eval()).to(device).eval()
    return FeatureExtractor("dinov2-cls", module, INPUT_SIZE, directory_sha256(weights, memo_dir),
                            torch.device(device))


def build(metric: Metric, context: MetricContext) -> ReferenceDistance:
    return ReferenceDistance(metric, context, dinov2_extractor,
                             lambda f, ref: frechet_distance(GaussianStats.from_features(f), ref.stats))
