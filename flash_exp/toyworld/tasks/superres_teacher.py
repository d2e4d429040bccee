"""The toy x4 super-resolution teacher: ``StableDiffusionUpscalePipeline``; 7 input channels and a
1000-class noise-level embedding (zero-initialised), fine-tuned on x4-downscaled images at noise levels
0..100."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, StableDiffusionUpscalePipeline

from flash_exp.toyworld.dataset import ToyData
from flash_exp.toyworld.tasks.finetune import (
    Base,
    TextTable,
    diffusion_loss,
    draw_indices,
    fit,
    latent_table,
    sampling_scheduler,
    unet_groups,
    widen_unet,
)
from flash_exp.toyworld.tasks.settings import TaskBuildSettings
from flash_exp.toyworld.teacher import save_pipeline


def build_superres(base: Base, data: ToyData, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.filters import resize
    from flash_exp.tasks.superres import noise_augment

    torch.manual_seed(seed)
    unet = widen_unet(base.unet, 3, num_class_embeds=1000).train()
    text = TextTable(base, data.captions)
    pixels_all = data.pixels(torch.arange(len(data)))
    mean, _ = latent_table(base.vae, data)
    scale = base.vae.config.scaling_factor
    lowres = torch.cat([resize(chunk, pixels_all.shape[-1] // 4) for chunk in pixels_all.split(1024)]).clamp(-1, 1)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = draw_indices(data, settings.batch_size, g)
        latents = mean[index] * scale
        low = resize(lowres[index], tuple(latents.shape[-2:])).clamp(-1, 1)
        level = torch.randint(0, 101, (len(index),), generator=g)
        concat = noise_augment(low, torch.randn(low.shape, generator=g), level)
        states = text.lookup([data.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        return diffusion_loss(unet, latents, concat, states, g, class_labels=level)

    fit(unet_groups(unet, ("conv_in", "class_embedding")), loss_fn, settings.superres_steps, seed,
        "toy super-resolution teacher")
    pipe = StableDiffusionUpscalePipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet.eval(),
        low_res_scheduler=DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
        scheduler=sampling_scheduler(), max_noise_level=350)
    save_pipeline(pipe, out / "superres")
