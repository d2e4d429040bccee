"""Tiny conditional teachers built from config (no hub) for the task tests: inpainting (SD1.5, SDXL),
the x4 upscaler (SD, 7-channel UNet, class labels, v-prediction, f=4 VAE), a T2I-Adapter matching
the tiny UNets, and a face-swap teacher (inpainting + CLIP image encoder + identity projection)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionUpscalePipeline,
    StableDiffusionXLInpaintPipeline,
    T2IAdapter,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from tests.tiny_models import tiny_clip_encoder, tiny_clip_tokenizer, tiny_vae


def _sd_text(tokenizer):
    return CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer) + 8, max_position_embeddings=16,
    ))


def _sd_unet(in_channels: int, sample_size: int = 16, **kw) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=8,
        norm_num_groups=8, **kw,
    )


def _sd_scheduler():
    return DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000)


def build_tiny_sd_inpainting(path: Path, seed: int = 0) -> Path:
    """StableDiffusionInpaintPipeline: 9-channel UNet [x_t, mask, masked latents], 32 px images."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    pipe = StableDiffusionInpaintPipeline(
        vae=tiny_vae(), text_encoder=_sd_text(tokenizer), tokenizer=tokenizer, unet=_sd_unet(9),
        scheduler=_sd_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_sdxl_inpainting(path: Path, seed: int = 0) -> Path:
    """StableDiffusionXLInpaintPipeline: the tiny SDXL UNet with 9 input channels."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLInpaintPipeline(
        vae=tiny_vae(), text_encoder=tiny_clip_encoder(CLIPTextModel, tokenizer),
        text_encoder_2=tiny_clip_encoder(CLIPTextModelWithProjection, tokenizer), tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_upscaler(path: Path, seed: int = 0) -> Path:
    """StableDiffusionUpscalePipeline like stabilityai/stable-diffusion-x4-upscaler, tiny: f=4 VAE (32 px
    image <-> 8x8 latents = the 8x8 low-res input), 7-channel UNet with a 1000-class noise-level
    embedding, v-prediction DDIM scheduler, DDPM low_res_scheduler."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    vae = AutoencoderKL(
        block_out_channels=[16, 32, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        norm_num_groups=8, sample_size=32, scaling_factor=0.08333,
    )
    unet = _sd_unet(7, sample_size=8, num_class_embeds=1000)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type="v_prediction", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1)
    pipe = StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=_sd_text(tokenizer), tokenizer=tokenizer, unet=unet,
        low_res_scheduler=DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
        scheduler=scheduler, max_noise_level=350,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_adapter(path: Path, seed: int = 0, in_channels: int = 1) -> Path:
    """A T2IAdapter whose residuals fit the tiny SD1.5 / SDXL UNets at 32 px: [32 @ 8x8, 64 @ 8x8]
    (full_adapter_xl: one un-downsampled second block, as SDXL's)."""
    torch.manual_seed(seed)
    T2IAdapter(in_channels=in_channels, channels=[32, 64], num_res_blocks=1, downscale_factor=4,
               adapter_type="full_adapter_xl").save_pretrained(path)
    return path


def build_tiny_faceswap(path: Path, seed: int = 0, reference_size: int = 32, num_tokens: int = 4) -> Path:
    """The tiny SD1.5 inpainting pipeline plus image_encoder/ (CLIPVisionModelWithProjection) and
    image_projection/ (identity tokens of width 32 = the UNet's cross-attention width)."""
    from flash_exp.tasks.faceswap import ENCODER_DIR, PROJECTION_DIR, IdentityProjection

    build_tiny_sd_inpainting(path, seed)
    torch.manual_seed(seed + 1)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
        image_size=reference_size, patch_size=8, projection_dim=16,
    ))
    encoder.save_pretrained(path / ENCODER_DIR)
    IdentityProjection(16, 32, num_tokens).save_pretrained(path / PROJECTION_DIR)
    return path
