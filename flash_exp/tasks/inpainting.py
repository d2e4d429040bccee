"""Inpainting: fill a masked region given the rest of the image and the caption.

Data pipeline: a mask per sample (1 = fill), a random box or free-form brush strokes covering a
fraction of the image drawn from ``task.mask.coverage``.

Condition, as the diffusers inpainting pipelines (``StableDiffusionInpaintPipeline``,
``StableDiffusionXLInpaintPipeline``) build it: ``concat = [mask at latent resolution (nearest),
latents of the masked image]``, appended after x_t, i.e. the denoiser input is
``[x_t, mask, masked_image_latents]`` (4 + 1 + 4 = 9 channels for SD1.5 and SDXL). The masked image
is ``pixels * (mask < 0.5)``: the hole is 0 (mid-gray). The null condition carries the same concat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import MaskConfig, TaskConfig
from flash_exp.tasks.base import SampleTransform, Task, check_concat_channels

STROKE_GRID = 256


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def random_box_mask(size: int, coverage: float, generator: torch.Generator) -> torch.Tensor:
    """(size, size) {0, 1}: one axis-aligned box of about ``coverage`` of the image, aspect in [1/2, 2]."""
    aspect = math.exp(_uniform(generator, math.log(0.5), math.log(2.0)))
    area = coverage * size * size
    h = int(round(min(size, max(1.0, math.sqrt(area / aspect)))))
    w = int(round(min(size, max(1.0, area / h))))
    top = int(torch.randint(0, size - h + 1, (), generator=generator))
    left = int(torch.randint(0, size - w + 1, (), generator=generator))
    mask = torch.zeros(size, size)
    mask[top:top + h, left:left + w] = 1.0
    return mask


def _segment_distance(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of each of ``points`` (N, 2) to the segment a-b."""
    ab = b - a
    t = ((points - a) @ ab / ab.dot(ab).clamp_min(1e-8)).clamp(0.0, 1.0)
    return (points - (a + t[:, None] * ab)).norm(dim=1)


def stroke_mask(size: int, coverage: float, generator: torch.Generator, width: tuple[float, float] = (0.05, 0.15),
                max_strokes: int = 8) -> torch.Tensor:
    """(size, size) {0, 1}: free-form brush strokes (random polylines with a round brush), added until
    about ``coverage`` of the image is covered or ``max_strokes`` are drawn."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    grid = torch.stack([xs.flatten(), ys.flatten()], dim=1) + 0.5
    mask = torch.zeros(size * size, dtype=torch.bool)
    for _ in range(max_strokes):
        brush = max(1.0, _uniform(generator, *width) * size)
        point = torch.rand(2, generator=generator) * size
        angle = _uniform(generator, 0.0, 2 * math.pi)
        for _ in range(int(torch.randint(2, 7, (), generator=generator))):
            angle += _uniform(generator, -math.pi / 2, math.pi / 2)
            length = _uniform(generator, 0.1, 0.4) * size
            nxt = (point + length * torch.tensor([math.cos(angle), math.sin(angle)])).clamp(0, size)
            mask |= _segment_distance(grid, point, nxt) <= brush / 2
            point = nxt
            if mask.float().mean() >= coverage:
                return mask.view(size, size).float()
    return mask.view(size, size).float()


def draw_mask(cfg: MaskConfig, size: int, generator: torch.Generator) -> torch.Tensor:
    """(1, size, size) float {0, 1} mask per ``task.mask`` (1 = region to fill)."""
    coverage = _uniform(generator, *cfg.coverage)
    kind = cfg.kind
    if kind == "mixed":
        kind = "box" if torch.rand((), generator=generator).item() < cfg.box_prob else "stroke"
    if kind == "box":
        return random_box_mask(size, coverage, generator)[None]
    # strokes are drawn on a grid of at most STROKE_GRID pixels a side, then upsampled (nearest)
    side = min(size, STROKE_GRID)
    mask = stroke_mask(side, coverage, generator, tuple(cfg.stroke_width), cfg.max_strokes)
    if side != size:
        mask = F.interpolate(mask[None, None], size=(size, size))[0, 0]
    return mask[None]


class MaskTransform(SampleTransform):
    def __init__(self, cfg: MaskConfig):
        self.cfg = cfg

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        item["mask"] = draw_mask(self.cfg, item["pixels"].shape[-1], generator)
        return item


def masked_pixels(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The inpainting pipelines' masked image: pixels where mask < 0.5, 0 (mid-gray) in the hole."""
    return pixels * (mask < 0.5).to(pixels)


def inpainting_concat(backbone: Backbone, pixels: torch.Tensor, mask: torch.Tensor,
                      latent_size: tuple[int, int]) -> torch.Tensor:
    """(B, 1 + C, h, w): the mask at latent resolution (nearest, as diffusers) and the masked latents."""
    masked_latents = backbone.encode_images(masked_pixels(pixels, mask))
    small = F.interpolate(mask.to(masked_latents), size=latent_size)
    return torch.cat([small, masked_latents], dim=1)


class InpaintingTask(Task):
    name = "inpainting"
    has_ground_truth = True

    @staticmethod
    def sample_transform(cfg: TaskConfig, resolution: int) -> SampleTransform:
        return MaskTransform(cfg.mask)

    def add_condition(self, batch: dict, backbone: Backbone, latents: torch.Tensor, cond: Condition,
                      null: Condition) -> tuple[Condition, Condition]:
        concat = inpainting_concat(backbone, batch["pixels"], batch["mask"], latents.shape[-2:])
        check_concat_channels(self.name, backbone, concat.shape[1], "mask + masked-image latents")
        return cond.with_concat(concat), null.with_concat(concat)

    def grid_inputs(self, batch: dict) -> list[tuple[str, torch.Tensor]]:
        return [("masked input", masked_pixels(batch["pixels"], batch["mask"]))]

    def condition_metrics(self, images: torch.Tensor, batch: dict) -> dict[str, float]:
        """PSNR of the region outside the mask (what the output must preserve) against the input."""
        from flash_exp.metrics.restoration import masked_psnr

        keep = 1.0 - batch["mask"].to(images)
        target = (batch["pixels"].to(images) + 1) / 2
        return {"psnr_unmasked": masked_psnr(images, target, keep), "psnr_masked": masked_psnr(images, target, 1 - keep)}


__all__ = ["InpaintingTask", "MaskTransform", "draw_mask", "inpainting_concat", "masked_pixels", "random_box_mask",
           "stroke_mask"]
