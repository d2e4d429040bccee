"""Super-resolution (x4 by default), in the diffusers x4-upscaler convention.

Data pipeline: the image is blurred (sigma from ``task.degradation.blur_sigma``), downscaled by
``scale`` (bicubic, antialiased) and noised (std from ``noise_std``): ``lowres`` (3, R/s, R/s).

Condition, as ``StableDiffusionUpscalePipeline``: the low-res image at the latent resolution (it
already is for the x4 upscaler, whose VAE downsamples by 4; otherwise resized, bicubic), noise-
augmented with the upscaler's ``low_res_scheduler`` (DDPM, linear betas 1e-4..0.02) at
``noise_level``, concatenated after x_t (3 channels: 4 + 3 = 7 input channels), and ``noise_level``
as the UNet's ``class_labels``. The augmentation noise comes from a per-sample seed drawn in the
data pipeline. The null condition carries the same low-res image and noise level.
"""

from __future__ import annotations

import torch

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import DegradationConfig, TaskConfig
from flash_exp.tasks.base import SampleTransform, Task, check_concat_channels, per_sample_noise
from flash_exp.tasks.filters import gaussian_blur, resize

# StableDiffusionUpscalePipeline's low_res_scheduler (stabilityai/stable-diffusion-x4-upscaler)
LOW_RES_BETAS = (1e-4, 0.02)
LOW_RES_STEPS = 1000


def low_res_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(*LOW_RES_BETAS, LOW_RES_STEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def noise_augment(image: torch.Tensor, noise: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
    """``low_res_scheduler.add_noise(image, noise, level)``: sqrt(ab) image + sqrt(1 - ab) noise."""
    ab = low_res_alphas_cumprod().to(image.device)[torch.as_tensor(level, device=image.device).long()]
    ab = ab.to(image.dtype).reshape(-1, *([1] * (image.ndim - 1)))
    return ab.sqrt() * image + (1 - ab).sqrt() * noise


def degrade(pixels: torch.Tensor, cfg: DegradationConfig, generator: torch.Generator) -> torch.Tensor:
    """(3, R, R) in [-1, 1] -> the low-res input (3, R/scale, R/scale) in [-1, 1]."""
    u = torch.rand(2, generator=generator)
    sigma = cfg.blur_sigma[0] + (cfg.blur_sigma[1] - cfg.blur_sigma[0]) * u[0].item()
    std = cfg.noise_std[0] + (cfg.noise_std[1] - cfg.noise_std[0]) * u[1].item()
    x = gaussian_blur(pixels[None], sigma)
    low = resize(x, pixels.shape[-1] // cfg.scale)[0]
    if std > 0:
        low = low + std * torch.randn(low.shape, generator=generator)
    return low.clamp(-1.0, 1.0)


class DegradeTransform(SampleTransform):
    def __init__(self, cfg: DegradationConfig):
        self.cfg = cfg

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        item["lowres"] = degrade(item["pixels"], self.cfg, generator)
        item["noise_seed"] = torch.randint(2**62, (), generator=generator)
        return item


def downscaled(images: torch.Tensor, scale: int) -> torch.Tensor:
    """Plain (blur-free) antialiased bicubic downscaling by ``scale``."""
    return resize(images, images.shape[-1] // scale)


class SuperResTask(Task):
    name = "superres"
    has_ground_truth = True

    @staticmethod
    def sample_transform(cfg: TaskConfig, resolution: int) -> SampleTransform:
        if resolution % cfg.degradation.scale:
            raise ValueError(f"backbone.resolution={resolution} is not a multiple of "
                             f"task.degradation.scale={cfg.degradation.scale}")
        return DegradeTransform(cfg.degradation)

    def low_res_condition(self, batch: dict, latent_size: tuple[int, int]) -> torch.Tensor:
        """(B, 3, h, w): the low-res image at the latent resolution, noise-augmented at ``noise_level``."""
        low = resize(batch["lowres"].float(), tuple(latent_size)).clamp(-1.0, 1.0)
        noise = per_sample_noise(batch["noise_seed"], tuple(low.shape[1:]), low.device)
        return noise_augment(low, noise, self.cfg.degradation.noise_level)

    def add_condition(self, batch: dict, backbone: Backbone, latents: torch.Tensor, cond: Condition,
                      null: Condition) -> tuple[Condition, Condition]:
        concat = self.low_res_condition(batch, latents.shape[-2:]).to(latents)
        check_concat_channels(self.name, backbone, concat.shape[1], "the low-res image")
        labels = torch.full((latents.shape[0],), self.cfg.degradation.noise_level, dtype=torch.long,
                            device=latents.device)
        return (backbone.add_class_labels(cond.with_concat(concat), labels),
                backbone.add_class_labels(null.with_concat(concat), labels))

    def grid_inputs(self, batch: dict) -> list[tuple[str, torch.Tensor]]:
        return [(f"low-res input (x{self.cfg.degradation.scale})",
                 resize(batch["lowres"].float(), batch["pixels"].shape[-1], mode="nearest"))]

    def condition_metrics(self, images: torch.Tensor, batch: dict) -> dict[str, float]:
        """PSNR of the output downscaled by ``scale`` (bicubic) against the low-res input itself."""
        from flash_exp.metrics.restoration import psnr

        target = (batch["lowres"].to(images) + 1) / 2
        small = resize(images, tuple(target.shape[-2:])).clamp(0, 1)
        return {"psnr_lowres_consistency": psnr(small, target)}


__all__ = ["DegradeTransform", "SuperResTask", "degrade", "downscaled", "low_res_alphas_cumprod", "noise_augment"]
