"""The toy teacher: a tiny Stable Diffusion 1.5 built from configs and trained on the shapes data.

Architecture (same classes as SD1.5, nothing from the hub):

* ``AutoencoderKL`` with one downsampling: a (3, 32, 32) image in [-1, 1] <-> a (4, 16, 16) latent;
  ``scaling_factor`` is measured after training so scaled latents have unit standard deviation.
* ``UNet2DConditionModel`` on (4, 16, 16) latents, cross-attending to (77, 64) text states.
* ``CLIPTextModel`` (2 layers, width 64) and a ``CLIPTokenizer`` whose BPE is trained in memory on
  the caption words: every caption word is one token, other lowercase words fall back to pieces.
* SD1.5's noise schedule (scaled_linear betas 0.00085..0.012, 1000 steps, epsilon prediction).
"""

from __future__ import annotations

import json
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from tqdm import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from flash_exp.toyworld.dataset import ToyData

LATENT_CHANNELS = 4
LATENT_SIZE = 16
TEXT_WIDTH = 64
MAX_TOKENS = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"  # also the pad and unknown token, as in SD1.5
SD_NOISE_SCHEDULE: dict = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


@dataclass(frozen=True)
class SamplingBudget:
    """The teacher's full sampling budget: the sampler it is judged with and distilled from."""

    scheduler: str = "DPMSolverMultistepScheduler"
    num_inference_steps: int = 25
    guidance_scale: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)


def build_tokenizer(words: list[str]) -> CLIPTokenizer:
    """A CLIP BPE tokenizer trained in memory on ``words`` plus the alphabet.

    Each of ``words`` becomes a single ``word</w>`` token; any other lowercase word is split into
    learnt pieces or single letters; other characters map to the unknown token (= eos).
    """
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS_TOKEN))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=10_000,
        special_tokens=[BOS_TOKEN, EOS_TOKEN],
        initial_alphabet=list(string.ascii_lowercase),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    # the alphabet as one-letter words gives every letter its end-of-word form too
    bpe.train_from_iterator([" ".join(words), " ".join(string.ascii_lowercase)], trainer)
    model = json.loads(bpe.to_str())["model"]
    return CLIPTokenizer(
        vocab=model["vocab"],
        merges=[tuple(pair) for pair in model["merges"]],
        model_max_length=MAX_TOKENS,
    )


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    """CLIPTextModel producing (B, 77, 64) hidden states for ``tokenizer``'s ids."""
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def build_vae() -> AutoencoderKL:
    """AutoencoderKL mapping (B, 3, 32, 32) pixels to (B, 4, 16, 16) latents (one downsampling)."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 32),
        layers_per_block=1,
        latent_channels=LATENT_CHANNELS,
        norm_num_groups=8,
        sample_size=32,
        mid_block_add_attention=False,
    )


def build_unet() -> UNet2DConditionModel:
    """UNet2DConditionModel on (B, 4, 16, 16) latents with cross-attention to (B, 77, 64) text states."""
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        attention_head_dim=8,
        cross_attention_dim=TEXT_WIDTH,
        norm_num_groups=8,
    )


def training_scheduler() -> DDPMScheduler:
    """The SD1.5 noise schedule used for training."""
    return DDPMScheduler(**SD_NOISE_SCHEDULE, clip_sample=False)


def sampling_scheduler(budget: SamplingBudget) -> DPMSolverMultistepScheduler:
    """The sampler of ``budget`` on the SD1.5 noise schedule (saved with the pipeline)."""
    if budget.scheduler != DPMSolverMultistepScheduler.__name__:
        raise ValueError(f"unsupported teacher scheduler {budget.scheduler!r}")
    return DPMSolverMultistepScheduler(**SD_NOISE_SCHEDULE)


def train_vae(data: ToyData, steps: int, batch_size: int = 32, lr: float = 2e-3,
              kl_weight: float = 1e-6, seed: int = 0) -> AutoencoderKL:
    """Train the VAE on ``data`` (L1 on pixels + ``kl_weight`` x KL per latent element).

    The returned VAE has ``config.scaling_factor`` set by :func:`measure_scaling_factor`.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vae = build_vae()
    pixels = data.pixels(torch.arange(len(data)))
    pixels = torch.cat([pixels, pixels.flip(-1)])  # mirror images double the data: (2N, 3, 32, 32)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(100, steps // 10),
                                               num_training_steps=steps)
    vae.train()
    progress = tqdm(range(steps), desc="toy VAE", unit="step")
    for _ in progress:
        x = pixels[torch.randint(len(pixels), (batch_size,), generator=generator)]
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        l1 = F.l1_loss(reconstruction, x)
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        loss = l1 + kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        progress.set_postfix(l1=f"{l1.item():.4f}", kl=f"{kl.item():.2f}")
    vae.eval().requires_grad_(False)
    vae.register_to_config(scaling_factor=measure_scaling_factor(vae, data))
    return vae


@torch.no_grad()
def encode_posteriors(vae: AutoencoderKL, pixels: torch.Tensor, batch_size: int = 256
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of ``pixels`` (B, 3, 32, 32) in [-1, 1]: two (B, 4, 16, 16) tensors,
    unscaled (multiply samples by ``vae.config.scaling_factor``)."""
    means, stds = [], []
    for chunk in pixels.split(batch_size):
        dist = vae.encode(chunk).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    return torch.cat(means), torch.cat(stds)


def measure_scaling_factor(vae: AutoencoderKL, data: ToyData, count: int = 2048, seed: int = 0) -> float:
    """1 / std of posterior samples of the first ``count`` images, rounded to 4 decimals."""
    mean, std = encode_posteriors(vae, data.pixels(torch.arange(min(count, len(data)))))
    sample = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
    return round(1.0 / sample.std().item(), 4)


def train_denoiser(vae: AutoencoderKL, tokenizer: CLIPTokenizer, data: ToyData, steps: int,
                   batch_size: int = 64, lr: float = 2e-3, uncond_prob: float = 0.1,
                   snr_gamma: float = 5.0, ema_decay: float = 0.995, seed: int = 0
                   ) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """Train the UNet and the text encoder jointly on ``data`` (epsilon MSE, min-SNR weighted).

    The caption is replaced by the empty prompt with probability ``uncond_prob`` (for CFG).
    Returns the EMA weights of both models, in eval mode.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    unet, text_encoder = build_unet(), build_text_encoder(tokenizer)
    noise_scheduler = training_scheduler()
    latent_mean, latent_std = encode_posteriors(vae, data.pixels(torch.arange(len(data))))
    scale = vae.config.scaling_factor

    def token_ids(prompts: list[str]) -> torch.Tensor:
        return tokenizer(prompts, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                         return_tensors="pt").input_ids

    caption_ids = token_ids(data.captions)
    empty_ids = token_ids([""])

    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(200, steps // 10),
                                               num_training_steps=steps)
    ema = EMAModel(params, decay=ema_decay)
    unet.train()
    text_encoder.train()
    progress = tqdm(range(steps), desc="toy teacher", unit="step")
    for _ in progress:
        index = torch.randint(len(latent_mean), (batch_size,), generator=generator)
        eps = torch.randn(latent_mean[index].shape, generator=generator)
        latents = (latent_mean[index] + latent_std[index] * eps) * scale
        ids = caption_ids[index]
        drop = torch.rand(batch_size, generator=generator) < uncond_prob
        ids = torch.where(drop[:, None], empty_ids, ids)
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(noise_scheduler.config.num_train_timesteps, (batch_size,), generator=generator)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        prediction = unet(noisy, timesteps, text_encoder(ids)[0]).sample
        snr = compute_snr(noise_scheduler, timesteps)
        weights = snr.clamp(max=snr_gamma) / snr
        loss = (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * weights).mean()
        optimizer_step(loss, params, optimizer, schedule, ema)
        progress.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to(params)
    return unet.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)


def optimizer_step(loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                   schedule: torch.optim.lr_scheduler.LRScheduler, ema: EMAModel) -> None:
    """One update of the toy models' training loops: backward, clip the gradient norm at 1, step the
    optimiser, the learning-rate schedule and the EMA."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    schedule.step()
    ema.step(params)


def save_teacher(out_dir: Path, vae: AutoencoderKL, unet: UNet2DConditionModel,
                 text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, budget: SamplingBudget
                 ) -> StableDiffusionPipeline:
    """Save the teacher as a StableDiffusionPipeline directory (safetensors, no safety checker, UNet
    weights in float16) whose scheduler is the sampler of ``budget``; returns the pipeline."""
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=sampling_scheduler(budget),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save_pipeline(pipe, out_dir)
    return pipe


def save_pipeline(pipe: DiffusionPipeline, out_dir: Path) -> None:
    """``pipe.save_pretrained`` (safetensors) with the UNet stored in half precision, which keeps the
    shipped assets small (diffusers loads it as float32). The UNet in ``pipe`` is rounded the same
    way, so ``pipe`` stays the saved model."""
    pipe.save_pretrained(out_dir, safe_serialization=True)
    pipe.unet.half().save_pretrained(out_dir / "unet", safe_serialization=True)
    pipe.unet.float()
    for config in Path(out_dir).rglob("config.json"):  # no path of the build machine in shipped configs
        fields = json.loads(config.read_text())
        if fields.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
