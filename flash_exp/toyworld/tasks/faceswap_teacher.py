"""The toy face-swap teacher: an inpainting UNet (from the inpainting teacher when it is built) trained
jointly with a tiny CLIP image encoder (``image_encoder/``) and its identity-token projection
(``image_projection/``) on the synthetic faces."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from flash_exp.config import toy_paths
from flash_exp.toyworld.tasks.face_data import build_faces, load_faces
from flash_exp.toyworld.tasks.finetune import (
    Base,
    TextTable,
    diffusion_loss,
    encode_mode,
    fit,
    latent_table,
    sampling_scheduler,
    unet_groups,
    widen_unet,
)
from flash_exp.toyworld.tasks.settings import TaskBuildSettings
from flash_exp.toyworld.teacher import save_pipeline


def toy_image_encoder() -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=32, patch_size=4, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=64))


def build_faceswap(base: Base, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.faceswap import CLIP_MEAN, CLIP_STD, ENCODER_DIR, PROJECTION_DIR, IdentityProjection
    from flash_exp.tasks.inpainting import masked_pixels

    torch.manual_seed(seed)
    build_faces(out, settings, seed)
    faces = load_faces(toy_paths.faces_shards("train", out))
    inpainting = out / "inpainting" / "unet"
    if inpainting.is_dir():  # start from the inpainting teacher: it already fills holes
        unet = UNet2DConditionModel.from_pretrained(inpainting)
    else:
        unet = widen_unet(base.unet, 1 + base.vae.config.latent_channels)
    unet.train()
    encoder = toy_image_encoder().train()
    width = base.text_encoder.config.hidden_size
    projection = IdentityProjection(encoder.config.projection_dim, width, 4).train()
    text = TextTable(base, faces.captions)
    mean, _ = latent_table(base.vae, faces.targets)
    scale = base.vae.config.scaling_factor
    clip_mean, clip_std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(faces.captions), (settings.batch_size,), generator=g)
        latents = mean[index] * scale
        masks = faces.masks[index]
        concat = torch.cat([F.interpolate(masks, size=latents.shape[-2:]),
                            encode_mode(base.vae, masked_pixels(faces.targets[index], masks))], dim=1)
        embeds = encoder(pixel_values=((faces.references[index] + 1) / 2 - clip_mean) / clip_std).image_embeds
        embeds = embeds * (torch.rand(len(index), 1, generator=g) >= 0.1)  # identity dropped: zero embedding
        states = text.lookup([faces.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        states = torch.cat([states, projection(embeds)], dim=1)
        return diffusion_loss(unet, latents, concat, states, g)

    groups = unet_groups(unet, () if inpainting.is_dir() else ("conv_in",))
    groups.append((list(encoder.parameters()) + list(projection.parameters()), 1e-3))
    fit(groups, loss_fn, settings.faceswap_steps, seed, "toy face-swap teacher")
    target = out / "faceswap"
    save_pipeline(StableDiffusionInpaintPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet.eval(),
        scheduler=sampling_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ), target)
    encoder.eval().save_pretrained(target / ENCODER_DIR, safe_serialization=True)
    projection.eval().save_pretrained(target / PROJECTION_DIR)
