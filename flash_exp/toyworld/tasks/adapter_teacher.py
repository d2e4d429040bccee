"""The toy canny teacher: ``StableDiffusionAdapterPipeline``, the toy teacher unchanged (frozen) and a
diffusers ``T2IAdapter`` trained on Canny edges (``adapter/``)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionAdapterPipeline, T2IAdapter, UNet2DConditionModel

from flash_exp.toyworld.dataset import ToyData
from flash_exp.toyworld.tasks.finetune import (
    Base,
    TextTable,
    diffusion_loss,
    draw_indices,
    fit,
    latent_table,
    sampling_scheduler,
)
from flash_exp.toyworld.tasks.settings import CANNY, TaskBuildSettings
from flash_exp.toyworld.teacher import save_pipeline


def toy_adapter(unet: UNet2DConditionModel, vae_factor: int) -> T2IAdapter:
    """A T2IAdapter whose residuals fit ``unet``: the toy UNet (a plain first down block, then cross-
    attention blocks: SDXL's layout) takes [C0 after the first downsampling, C1 at the same size, C2 one
    level down, ...], which is diffusers' ``full_adapter_xl`` (for the toy at 32 px: [32 @ 8, 64 @ 8, 64 @ 4])."""
    return T2IAdapter(in_channels=1, channels=list(unet.config.block_out_channels), num_res_blocks=2,
                      downscale_factor=2 * vae_factor, adapter_type="full_adapter_xl")


def build_adapter_canny(base: Base, data: ToyData, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.canny import canny

    torch.manual_seed(seed)
    vae_factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    adapter = toy_adapter(base.unet, vae_factor).train()
    text = TextTable(base, data.captions)
    pixels_all = data.pixels(torch.arange(len(data)))
    mean, _ = latent_table(base.vae, data)
    scale = base.vae.config.scaling_factor
    edges = torch.cat([canny(chunk, CANNY.low_threshold, CANNY.high_threshold, CANNY.blur_sigma)
                       for chunk in pixels_all.split(1024)])

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = draw_indices(data, settings.batch_size, g)
        latents = mean[index] * scale
        states = text.lookup([data.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        residuals = adapter(edges[index])
        return diffusion_loss(base.unet, latents, None, states, g, cubic_timesteps=True,
                              down_intrablock_additional_residuals=residuals)

    fit([(list(adapter.parameters()), 1e-3)], loss_fn, settings.adapter_steps, seed, "toy canny adapter")
    pipe = StableDiffusionAdapterPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        adapter=adapter.eval(), scheduler=sampling_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    save_pipeline(pipe, out / "adapter_canny")
