"""The toy inpainting teacher: ``StableDiffusionInpaintPipeline``; the toy UNet with ``conv_in`` widened
to 9 channels (new weights zero, so training starts from the text-to-image teacher) fine-tuned on random
box / stroke masks (10 % full masks, 10 % empty captions for CFG)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionInpaintPipeline

from flash_exp.config import MaskConfig
from flash_exp.toyworld.dataset import ToyData
from flash_exp.toyworld.tasks.finetune import (
    Base,
    TextTable,
    diffusion_loss,
    draw_indices,
    encode_mode,
    fit,
    latent_table,
    sampling_scheduler,
    unet_groups,
    widen_unet,
)
from flash_exp.toyworld.tasks.settings import TaskBuildSettings
from flash_exp.toyworld.teacher import save_pipeline


def build_inpainting(base: Base, data: ToyData, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.inpainting import draw_mask, masked_pixels

    torch.manual_seed(seed)
    unet = widen_unet(base.unet, 1 + base.vae.config.latent_channels).train()
    text = TextTable(base, data.captions)
    mean, _ = latent_table(base.vae, data)
    scale = base.vae.config.scaling_factor
    mask_cfg = MaskConfig()

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = draw_indices(data, settings.batch_size, g)
        pixels = data.pixels(index)
        latents = mean[index] * scale
        masks = torch.stack([draw_mask(mask_cfg, pixels.shape[-1], g) for _ in index])
        full = torch.rand(len(index), generator=g) < 0.1
        masks[full] = 1.0
        concat = torch.cat([F.interpolate(masks, size=latents.shape[-2:]),
                            encode_mode(base.vae, masked_pixels(pixels, masks))], dim=1)
        states = text.lookup([data.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        return diffusion_loss(unet, latents, concat, states, g)

    fit(unet_groups(unet, ("conv_in",)), loss_fn, settings.inpainting_steps, seed, "toy inpainting teacher")
    pipe = StableDiffusionInpaintPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet.eval(),
        scheduler=sampling_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    save_pipeline(pipe, out / "inpainting")
