"""The bench's fixed reference model and its training configs.

An SD1.5-shaped pipeline with a UNet of block widths (32, 64, 64), one layer per block, cross-attention
dim 64, down blocks (DownBlock2D, CrossAttnDownBlock2D, CrossAttnDownBlock2D), a VAE with downsampling
factor 2, 32x32 images, batch 4, K = 32, the paper's phase 3 (all losses on), l2 distillation; random
weights, so the figures compare across implementations.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flash_exp.config import TrainConfig, compose_train_config

BATCH = 4
K = 32
WORDS = "a red green blue yellow circle square triangle on black white gray background".split()


def build_reference_pipeline(path: Path, seed: int = 0) -> Path:
    """Save the reference SD1.5-shaped pipeline (random weights) at ``path``."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    from flash_exp.toyworld.teacher import build_text_encoder, build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(WORDS)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=32)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    StableDiffusionPipeline(vae=vae, text_encoder=build_text_encoder(tokenizer), tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(path)
    return path


def reference_config(pretrained: Path, *overrides: str) -> TrainConfig:
    """The training config of the reference model at ``pretrained``, plus ``overrides``."""
    return compose_train_config([
        "backbone=sd15", f"backbone.pretrained={pretrained}", "backbone.resolution=32",
        "backbone.lora.rank=16", "backbone.lora.alpha=16", "backbone.discriminator.head=generic",
        "backbone.discriminator.channels=[64,128]",
        "loss.distill.type=l2", "data.shards=[unused]", f"phases.k=[{K},{K},{K},{K}]", *overrides,
    ])


def modes_overrides(index: int | None) -> list[str]:
    """Fix the start index at mode ``index`` (0..3) in every phase, or keep the paper's mixture (None)."""
    if index is None:
        return []
    row = [1.0 if j == index else 0.0 for j in range(4)]
    return ["timesteps=modes", f"timesteps.mode_probs=[{row},{row},{row},{row}]"]
