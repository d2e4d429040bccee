"""Tiny diffusers pipelines built from config (no hub), saved with ``save_pretrained`` for the tests."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    PixArtAlphaPipeline,
    PixArtTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)

WORDS = "a an the photo of red green blue yellow circle square triangle on background cat dog".split()


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A word-level CLIP BPE tokenizer built in memory: each word is one token, letters are the fallback."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    letters = "abcdefghijklmnopqrstuvwxyz"
    for ch in letters:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    merges = []
    for word in WORDS:
        prefix = word[0]
        for i, ch in enumerate(word[1:], start=1):
            piece = ch + ("</w>" if i == len(word) - 1 else "")
            merged = prefix + piece
            merges.append((prefix, piece))
            vocab.setdefault(merged, len(vocab))
            prefix = merged
        if len(word) == 1:
            vocab.setdefault(word + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=list(dict.fromkeys(merges)), model_max_length=16)


def build_tiny_sd(path: Path, seed: int = 0, in_channels: int = 4) -> Path:
    """A tiny SD1.5-architecture pipeline (32x32 images, 4x16x16 latents) saved at ``path``."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer) + 8,
        max_position_embeddings=16,
    ))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8, sample_size=32,
    )
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return path


def tiny_t5_tokenizer(model_max_length: int = 120) -> T5Tokenizer:
    """A Unigram T5 tokenizer built in memory: one piece per word of WORDS, letters as the fallback."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in WORDS]
    vocab += [(ch, -5.0) for ch in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


def tiny_t5_encoder(d_model: int, vocab_size: int) -> T5EncoderModel:
    """An explicit tiny T5 encoder config (no hub config): ``d_model`` must match what consumes it."""
    return T5EncoderModel(T5Config(
        d_ff=37, d_kv=8, d_model=d_model, num_decoder_layers=2, num_heads=4, num_layers=2,
        relative_attention_num_buckets=8, vocab_size=vocab_size, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    ))


def tiny_clip_encoder(cls, tokenizer: CLIPTokenizer, hidden_size: int = 32, projection_dim: int = 32):
    return cls(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden_size, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer) + 8,
        max_position_embeddings=tokenizer.model_max_length, hidden_act="gelu", projection_dim=projection_dim,
    ))


def tiny_vae(**kwargs) -> AutoencoderKL:
    """A 2-level AutoencoderKL: 32x32 images <-> 4x16x16 latents."""
    return AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8, sample_size=32, **kwargs,
    )


def build_tiny_sdxl(path: Path, seed: int = 0) -> Path:
    """A tiny SDXL-architecture pipeline: two CLIP encoders (the second with projection), a UNet with
    ``text_time`` micro-conditioning and linear projections, an EulerDiscrete scheduler as SDXL base."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_clip_encoder(CLIPTextModel, tokenizer)
    text_encoder_2 = tiny_clip_encoder(CLIPTextModelWithProjection, tokenizer)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64, norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_pixart(path: Path, seed: int = 0) -> Path:
    """A tiny PixArt-alpha pipeline: T5 encoder (``d_model == caption_channels``), learned-sigma
    transformer (out_channels 8) with ``sample_size=128`` so that, like the 1024 model, it takes the
    resolution and aspect-ratio conditioning."""
    torch.manual_seed(seed)
    tokenizer = tiny_t5_tokenizer()
    caption_channels = 32
    text_encoder = tiny_t5_encoder(caption_channels, len(tokenizer) + 8)
    transformer = PixArtTransformer2DModel(
        sample_size=128, num_layers=2, patch_size=2, attention_head_dim=8, num_attention_heads=3,
        caption_channels=caption_channels, in_channels=4, cross_attention_dim=24, out_channels=8,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
        norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
    )
    assert transformer.use_additional_conditions
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=tiny_vae(),
                               transformer=transformer, scheduler=scheduler)
    pipe.save_pretrained(path)
    return path


def build_tiny_sd3(path: Path, seed: int = 0, with_t5: bool = False, mmdit_x: bool = False) -> Path:
    """A tiny SD3 (MMDiT, flow matching) pipeline: two CLIP encoders with projection, optionally a T5
    (without it the pipeline uses zeros for the T5 tokens, as Flash SD3 without ``USE_T5``), a VAE
    with ``shift_factor``, and a FlowMatchEuler scheduler with SD3's shift 3. ``mmdit_x``: SD3.5 Medium's
    MMDiT-X, the first block with the image-only second attention (``attn2``), QK RMS norm in both."""
    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_clip_encoder(CLIPTextModelWithProjection, tokenizer)
    text_encoder_2 = tiny_clip_encoder(CLIPTextModelWithProjection, tokenizer)
    joint_dim = 64  # >= the two CLIP hidden sizes concatenated (32 + 32), = the T5 d_model
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, num_layers=2, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=joint_dim,
        pooled_projection_dim=64, out_channels=4, pos_embed_max_size=16,
        **({"dual_attention_layers": (0,), "qk_norm": "rms_norm"} if mmdit_x else {}),
    )
    vae = tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)
    tokenizer_3 = text_encoder_3 = None
    if with_t5:
        tokenizer_3 = tiny_t5_tokenizer(model_max_length=256)
        text_encoder_3 = tiny_t5_encoder(joint_dim, len(tokenizer_3) + 8)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=text_encoder, tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3, tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(path)
    return path


def build_tiny_flux(path: Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """A tiny FLUX.1 pipeline: CLIP (pooled output) and T5 encoders, a ``FluxTransformer2DModel`` reading
    2x2-packed 4-channel latents (in_channels 16), with the guidance embedding of FLUX.1-dev
    (``guidance_embeds=True``) or without it (FLUX.1-schnell's shape), a VAE with ``shift_factor``, and
    the FLUX.1-dev scheduler config (dynamic shift, mu from the image sequence length)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = tiny_clip_encoder(CLIPTextModel, tokenizer)
    t5_dim = 32
    tokenizer_2 = tiny_t5_tokenizer(model_max_length=512)
    text_encoder_2 = tiny_t5_encoder(t5_dim, len(tokenizer_2) + 8)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=t5_dim, pooled_projection_dim=32,
        guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6),
    )
    vae = tiny_vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611)
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
        base_image_seq_len=256, max_image_seq_len=4096)
    if not guidance_embeds:  # FLUX.1-schnell's scheduler: no shift
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    pipe = FluxPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2)
    pipe.save_pretrained(path)
    return path
