"""The fine-tuning kit shared by the toy teacher builders: the frozen toy teacher, cached text states
and latents, a UNet with widened inputs, the min-SNR epsilon loss and an AdamW + EMA loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, UNet2DConditionModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from flash_exp.config import toy_paths
from flash_exp.toyworld.dataset import ToyData
from flash_exp.toyworld.teacher import (
    MAX_TOKENS,
    SD_NOISE_SCHEDULE,
    encode_posteriors,
    optimizer_step,
    training_scheduler,
)


@dataclass
class Base:
    """The toy teacher's components (frozen)."""

    vae: AutoencoderKL
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel


def load_base(root: Path) -> Base:
    """The toy teacher under ``root``, frozen and in eval mode."""
    teacher = toy_paths.teacher_dir(root)
    vae = AutoencoderKL.from_pretrained(teacher, subfolder="vae").eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(teacher, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(teacher, subfolder="text_encoder").eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(teacher, subfolder="unet").eval().requires_grad_(False)
    return Base(vae, tokenizer, text_encoder, unet)


class TextTable:
    """Frozen text-encoder states of a fixed set of captions (and of the empty prompt), looked up by index."""

    def __init__(self, base: Base, captions: list[str]):
        self.captions = sorted(set(captions))
        self.index = {c: i for i, c in enumerate(self.captions)}
        with torch.no_grad():
            ids = base.tokenizer(self.captions + [""], padding="max_length", max_length=MAX_TOKENS,
                                 truncation=True, return_tensors="pt").input_ids
            self.states = torch.cat([base.text_encoder(chunk)[0] for chunk in ids.split(256)])

    def lookup(self, captions: list[str], drop: torch.Tensor) -> torch.Tensor:
        rows = torch.tensor([self.index[c] for c in captions])
        rows = torch.where(drop, torch.full_like(rows, len(self.captions)), rows)
        return self.states[rows]


def widen_unet(unet: UNet2DConditionModel, extra_channels: int, **config) -> UNet2DConditionModel:
    """A copy of ``unet`` with ``extra_channels`` more input channels (zero weights) and ``config``
    changes (e.g. ``num_class_embeds``; a new class embedding starts at zero)."""
    new = UNet2DConditionModel.from_config({**dict(unet.config), "in_channels": unet.config.in_channels + extra_channels,
                                            **config})
    state = unet.state_dict()
    weight = state.pop("conv_in.weight")
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    with torch.no_grad():
        new.conv_in.weight.zero_()
        new.conv_in.weight[:, : weight.shape[1]] = weight
        if new.class_embedding is not None:
            for p in new.class_embedding.parameters():
                p.zero_()
    return new


_LATENTS: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
_SCHEDULER = training_scheduler()


def latent_table(vae: AutoencoderKL, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (unscaled), computed once per (VAE, image set)."""
    key = (id(vae), id(pixels) if not isinstance(pixels, ToyData) else id(pixels.images))
    if key not in _LATENTS:
        _LATENTS.clear()
        _LATENTS[key] = encode_posteriors(vae, pixels.pixels(torch.arange(len(pixels)))
                                          if isinstance(pixels, ToyData) else pixels)
    return _LATENTS[key]


def encode_mode(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """Scaled posterior modes of ``pixels`` (the conditioning latents of the masked image)."""
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor


def diffusion_loss(unet: UNet2DConditionModel, latents: torch.Tensor, concat: torch.Tensor | None,
                   states: torch.Tensor, generator: torch.Generator, snr_gamma: float = 5.0,
                   cubic_timesteps: bool = False, **unet_kwargs) -> torch.Tensor:
    """Epsilon MSE with min-SNR weighting (as the toy teacher) on [x_t, concat]. ``cubic_timesteps``:
    t = (1 - u^3) T, most draws at high noise where the layout is decided (the T2I-Adapter recipe)."""
    scheduler = _SCHEDULER
    noise = torch.randn(latents.shape, generator=generator)
    steps = scheduler.config.num_train_timesteps
    if cubic_timesteps:
        u = torch.rand(latents.shape[0], generator=generator)
        t = ((1 - u**3) * steps).long().clamp(max=steps - 1)
    else:
        t = torch.randint(steps, (latents.shape[0],), generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    x = noisy if concat is None else torch.cat([noisy, concat], dim=1)
    prediction = unet(x, t, states, **unet_kwargs).sample
    snr = compute_snr(scheduler, t)
    weights = snr.clamp(max=snr_gamma) / snr
    return (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * weights).mean()


def fit(groups: list[tuple[list[torch.nn.Parameter], float]], loss_fn: Callable[[torch.Generator], torch.Tensor],
        steps: int, seed: int, desc: str, ema_decay: float = 0.99) -> None:
    """AdamW over (parameters, learning rate) groups + cosine schedule + EMA (copied into the parameters
    at the end), gradient clipping at 1."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for group, _ in groups for p in group]
    optimizer = torch.optim.AdamW([{"params": g, "lr": lr} for g, lr in groups], weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(50, steps // 10),
                                               num_training_steps=max(1, steps))
    ema = EMAModel(params, decay=ema_decay)
    progress = tqdm(range(steps), desc=desc, unit="step", mininterval=10)
    for _ in progress:
        loss = loss_fn(generator)
        optimizer_step(loss, params, optimizer, schedule, ema)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    ema.copy_to(params)


FINE_TUNE_LR = 2e-4  # pretrained weights: small steps, or Adam's first updates wreck the teacher
NEW_LR = 2e-3  # new inputs (widened conv_in, class embedding), adapter, identity encoder


def unet_groups(unet: UNet2DConditionModel, new_prefixes: tuple[str, ...]) -> list[tuple[list, float]]:
    """The UNet's pretrained weights at FINE_TUNE_LR, those under ``new_prefixes`` at NEW_LR."""
    new = [p for n, p in unet.named_parameters() if n.startswith(new_prefixes)]
    old = [p for n, p in unet.named_parameters() if not n.startswith(new_prefixes)]
    return [(old, FINE_TUNE_LR), (new, NEW_LR)]


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    """The scheduler saved with every toy teacher pipeline."""
    return DPMSolverMultistepScheduler(**SD_NOISE_SCHEDULE)


def draw_indices(data: ToyData, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A batch of random sample indices into ``data``."""
    return torch.randint(len(data), (batch,), generator=generator)
