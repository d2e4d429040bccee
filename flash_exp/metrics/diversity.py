"""Per-prompt diversity of a benchmark with ``images_per_prompt`` N >= 2 (same prompt, other noise).

For each prompt's N images (consecutive files):

* the Vendi score (Friedman & Dieng 2023): ``exp(-sum_i l_i log l_i)`` over the eigenvalues ``l_i`` of
  ``K / N``, ``K`` the cosine similarities of the images' features (the benchmark's FID features,
  rows L2-normalised; ``vendi_score.vendi.score_dual``'s definition): 1 when all N are alike, N when
  they are orthogonal;
* the mean LPIPS (Zhang et al. 2018, the ``lpips`` package) over the N(N-1)/2 pairs, images cropped
  and resized to ``eval_res`` and scaled to [-1, 1]; only when the benchmark sets
  ``diversity.lpips_net``, since the package needs torchvision's ImageNet weights of that network.

Both are averaged over prompts; higher is more diverse.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flash_exp.metrics.images import CenterCropResize
from flash_exp.metrics.registry import (
    DEFAULT_LPIPS_NET,
    LPIPS_BACKBONES,
    Metric,
    MetricContext,
    MetricScorer,
    ScoreInput,
)


def vendi_score(features: np.ndarray) -> float:
    """Vendi score of (n, D) features under the cosine-similarity kernel (order q = 1)."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    eigenvalues = np.linalg.eigvalsh(x @ x.T / x.shape[0])
    eigenvalues = eigenvalues[eigenvalues > 0]
    return float(np.exp(-np.sum(eigenvalues * np.log(eigenvalues))))


def groups(count: int, size: int) -> list[range]:
    """Index ranges of ``count // size`` consecutive groups of ``size`` (one group per prompt)."""
    if size < 2 or count % size:
        raise ValueError(f"{count} images do not split into groups of images_per_prompt={size} >= 2")
    return [range(start, start + size) for start in range(0, count, size)]


def mean_vendi(features: np.ndarray, size: int) -> float:
    """Mean over prompts of the Vendi score of each prompt's ``size`` consecutive feature rows."""
    return float(np.mean([vendi_score(features[g.start:g.stop]) for g in groups(features.shape[0], size)]))


def missing_lpips_weights(net: str) -> str | None:
    """What to fetch when torchvision's ImageNet weights of the lpips network ``net`` are not in the torch
    hub cache (None when they are)."""
    if net not in LPIPS_BACKBONES:
        return f"lpips_net={net!r}, allowed: {', '.join(LPIPS_BACKBONES)}"
    url = LPIPS_BACKBONES[net]
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]
    if path.is_file():
        return None
    return (f"LPIPS needs torchvision's {net} weights at {path}, which does not exist; nothing is downloaded "
            f"at run time. Download {url} there (python -m flash_exp.prefetch, or set TORCH_HOME), or set "
            f"metric_options.diversity.lpips_net: null")


def load_images(files: list[Path], eval_res: int) -> torch.Tensor:
    """(N, 3, eval_res, eval_res) float images in [-1, 1], cropped and resized like FID's."""
    from PIL import Image

    crop = CenterCropResize(eval_res)
    arrays = []
    for f in files:
        with Image.open(f) as image:
            arrays.append(np.asarray(crop.pil(image.convert("RGB")), dtype=np.float32))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


@torch.no_grad()
def mean_pairwise_lpips(images: torch.Tensor, size: int, net: torch.nn.Module) -> float:
    """Mean over prompts of the mean LPIPS over the pairs of each prompt's ``size`` consecutive images
    (N, 3, H, W) in [-1, 1]; ``net``: an ``lpips.LPIPS`` module on the images' device."""
    values = []
    for g in groups(images.shape[0], size):
        pairs = list(combinations(g, 2))
        a = images[[i for i, _ in pairs]]
        b = images[[j for _, j in pairs]]
        values.append(float(net(a, b).flatten().double().mean()))
    return float(np.mean(values))


class Diversity(MetricScorer):
    def __init__(self, metric: Metric, context: MetricContext) -> None:
        self.metric, self.context = metric, context
        self.lpips_net: str | None = context.options.get("lpips_net", DEFAULT_LPIPS_NET)
        self._lpips: torch.nn.Module | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vendi": self.metric.pinned["vendi"]}
        if self.lpips_net is not None:
            from importlib.metadata import version

            out["lpips_diversity"] = {"definition": self.metric.pinned["lpips_diversity"], "net": self.lpips_net,
                                      "version": "0.1", "package": f"lpips=={version('lpips')}",
                                      "backbone": LPIPS_BACKBONES[self.lpips_net]}
        return out

    def _net(self) -> torch.nn.Module:
        if self._lpips is None:
            import lpips

            self._lpips = lpips.LPIPS(net=self.lpips_net, version="0.1", verbose=False).to(self.context.device).eval()
        return self._lpips

    def score(self, batch: ScoreInput) -> dict[str, float | None]:
        out: dict[str, float | None] = {"vendi": mean_vendi(batch.features, batch.images_per_prompt),
                                        "lpips_diversity": None}
        if self.lpips_net is not None:
            images = load_images(batch.files, batch.eval_res).to(self.context.device)
            out["lpips_diversity"] = mean_pairwise_lpips(images, batch.images_per_prompt, self._net())
        return out


def build(metric: Metric, context: MetricContext) -> Diversity:
    return Diversity(metric, context)
