"""FLUX.1 (family ``flux``, prediction ``flow``): ``FluxTransformer2DModel``, flow matching on packed latents.

What it shares with SD3 (:mod:`.sd3`): the velocity parametrisation x0 = x_t - s v with s = t / 1000,
the stock ``FlowMatchEulerDiscreteScheduler`` as the student's sampler (no consistency scalings), the
discriminator on the teacher's output, and the diffusers LoRA export. What differs:

- Latents: the VAE's (B, C, h, w) latents are what the method sees; the transformer reads them packed
  into 2x2 patches, (B, h/2 * w/2, 4C), with one (row, column) image id per patch, and returns its
  velocity packed the same way. :meth:`FluxBackbone._forward_denoiser` packs and unpacks with
  ``FluxPipeline``'s own static methods, so every loss and sampler step runs on (B, C, h, w).
- Schedule: the shift depends on the resolution (``use_dynamic_shifting``): mu from the image sequence
  length h/2 * w/2 through ``calculate_shift`` (0.5 at 256 tokens, 1.15 at 4096, i.e. 1024 px) and
  sigmas = linspace(1, 1/N, N) for N steps, as ``FluxPipeline`` calls its scheduler
  (:class:`FluxFlowMatchScheduler` takes the same defaults); an exponential shift by mu is the constant
  shift exp(mu), which :class:`~flash_exp.backbones.noise_schedule.NoiseSchedule` uses for the GAN and
  DMD timesteps.
- Guidance: FLUX.1-dev is guidance-distilled (``guidance_embeds=True``): its guidance w is an input of
  the transformer, so the teacher "with guidance w" is one call with the embedding at w
  (:attr:`FluxBackbone.embeds_guidance`), and the method's CFG range is the range of that embedding.
  The student is called with the embedding at ``backbone.student_guidance``, as its users'
  ``FluxPipeline(guidance_scale=...)`` calls it. A teacher without the embedding (FLUX.1-schnell's
  shape) keeps true CFG, two calls, with the null condition.
- Text: ``FluxPipeline.encode_prompt`` itself: the T5 tokens as ``encoder_hidden_states`` and the CLIP
  pooled output as ``pooled_projections``; the text ids are zeros.
- Export: diffusers LoRA through ``FluxPipeline.save_lora_weights``; users load it with
  ``pipe.load_lora_weights``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from flash_exp.backbones.base import build_scheduler, scheduler_overrides
from flash_exp.backbones.common import TransformerBackbone, cast_floats
from flash_exp.backbones.condition import Condition
from flash_exp.backbones.noise_schedule import NoiseSchedule

MAX_T5_LENGTH = 512  # FluxPipeline's default max_sequence_length


def sequence_shift(scheduler_config: dict, image_seq_len: int) -> float:
    """mu of the resolution-dependent shift for ``image_seq_len`` packed tokens, as ``FluxPipeline``."""
    return calculate_shift(
        image_seq_len,
        scheduler_config.get("base_image_seq_len", 256),
        scheduler_config.get("max_image_seq_len", 4096),
        scheduler_config.get("base_shift", 0.5),
        scheduler_config.get("max_shift", 1.15),
    )


class FluxFlowMatchScheduler(FlowMatchEulerDiscreteScheduler):
    """The stock scheduler whose ``set_timesteps(n)`` takes ``FluxPipeline``'s arguments by default:
    sigmas = linspace(1, 1/n, n) and, with ``use_dynamic_shifting``, ``mu`` of the training resolution.
    Given explicitly (as ``FluxPipeline`` gives them), sigmas and mu are used as they are."""

    mu: float | None = None

    def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
        if sigmas is None and timesteps is None and num_inference_steps is not None:
            sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
        if mu is None and self.config.use_dynamic_shifting:
            mu = self.mu
        super().set_timesteps(num_inference_steps, device=device, sigmas=sigmas, mu=mu, timesteps=timesteps)


class FlashFluxPipeline(FluxPipeline):
    """``FluxPipeline`` whose ``guidance_scale`` is true CFG with the empty prompt when the transformer has
    no guidance embedding (the training-time teacher grids of a schnell-shaped teacher)."""

    def __call__(self, *args, **kwargs):
        g = kwargs.get("guidance_scale", 0.0)
        if not self.transformer.config.guidance_embeds and g > 1.0 and kwargs.get("negative_prompt") is None:
            kwargs.update(true_cfg_scale=g, negative_prompt="")
        return super().__call__(*args, **kwargs)


class FluxBackbone(TransformerBackbone):
    pipeline_class = FluxPipeline
    denoiser_class = FluxTransformer2DModel

    def __init__(self, cfg):
        super().__init__(cfg)
        self._null_cache: Condition | None = None
        self._text_pipe: FluxPipeline | None = None
        if self.base_scheduler_config.get("use_dynamic_shifting", False):
            if self.base_scheduler_config.get("time_shift_type", "exponential") != "exponential":
                raise ValueError("backbone.pretrained: the flux family reads an exponential dynamic shift only")
            self.schedule = NoiseSchedule("flow", None, self.schedule.num_train_timesteps, shift=math.exp(self.mu))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def mu(self) -> float:
        """The shift's mu at the training resolution: (resolution / vae factor / 2)^2 packed tokens."""
        return sequence_shift(self.base_scheduler_config, (self.latent_size() // 2) ** 2)

    # ------------------------------------------------------------------ loading
    def _check_prediction(self) -> None:
        name = self.model_index["scheduler"][1]
        if self.cfg.prediction != "flow" or "FlowMatch" not in name:
            raise ValueError(
                f"backbone.prediction={self.cfg.prediction!r} with a {name} teacher scheduler: FLUX.1 is a "
                "flow-matching model, set backbone.prediction=flow"
            )
        if self.cfg.resolution % (2 * self.vae_scale_factor):
            raise ValueError(f"backbone.resolution={self.cfg.resolution}: FLUX packs 2x2 latents, so it must be "
                             "a multiple of twice the VAE's downsampling factor")

    def _load_text_encoders(self, path: str, kw: dict) -> None:
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        self.tokenizer_2 = T5TokenizerFast.from_pretrained(path, subfolder="tokenizer_2", **kw)
        self.text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=self.dtype, **kw)
        self.text_encoder_2 = T5EncoderModel.from_pretrained(
            path, subfolder="text_encoder_2", torch_dtype=self.dtype, **kw)

    def text_encoders(self) -> list[nn.Module]:
        return [self.text_encoder, self.text_encoder_2]

    def make_scheduler(self, which: str):
        """As :meth:`Backbone.make_scheduler`, as a :class:`FluxFlowMatchScheduler` at this resolution's mu."""
        sched_cfg = self.scheduler_config(which)
        if sched_cfg.name != "FlowMatchEulerDiscreteScheduler":
            return build_scheduler(sched_cfg, self.base_scheduler_config)
        scheduler = FluxFlowMatchScheduler.from_config(self.base_scheduler_config, **scheduler_overrides(sched_cfg))
        scheduler.mu = self.mu
        return scheduler

    # ------------------------------------------------------------------ conditions
    def _components(self) -> dict:
        return dict(transformer=self.transformer, vae=self.vae, text_encoder=self.text_encoder,
                    tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """``encoder_hidden_states`` (B, 512, T5 dim) and ``pooled_projections`` (B, CLIP dim)."""
        if self._text_pipe is None:  # a plain attribute: not a module, shares the components
            self._text_pipe = FluxPipeline(scheduler=None, **self._components())
        embeds, pooled, _ = self._text_pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=self.text_device, max_sequence_length=MAX_T5_LENGTH)
        return Condition(kwargs={"encoder_hidden_states": embeds, "pooled_projections": pooled})

    def null_condition(self, batch_size: int) -> Condition:
        cached = self._null_cache
        if cached is None or cached.kwargs["encoder_hidden_states"].device != self.text_device:
            text = self.cfg.negative_prompt if self.cfg.null_condition == "negative_prompt" else ""
            cached = self.encode_prompts([text])
            if self.cfg.null_condition == "zero":
                cached = Condition(kwargs={k: torch.zeros_like(v) for k, v in cached.kwargs.items()})
            self._null_cache = cached
        return cached.select(torch.zeros(batch_size, dtype=torch.long))

    # ------------------------------------------------------------------ guidance
    @property
    def embeds_guidance(self) -> bool:
        """Whether the teacher takes its guidance as an input embedding (FLUX.1-dev), one call per w."""
        return bool(self.transformer.config.guidance_embeds)

    def with_guidance(self, cond: Condition, guidance: torch.Tensor | float) -> Condition:
        """``cond`` whose denoiser call sets the guidance embedding to ``guidance`` (float or (B,))."""
        b = cond.kwargs["encoder_hidden_states"].shape[0]
        w = torch.as_tensor(guidance, dtype=torch.float32).reshape(-1).expand(b).clone()
        return Condition(kwargs={**cond.kwargs, "guidance": w}, concat=cond.concat)

    # ------------------------------------------------------------------ denoiser
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Velocity (B, C, h, w) at latents ``x`` (B, C, h, w): packed to 2x2 patches for the transformer,
        timestep t / 1000 as ``FluxPipeline`` passes it, the guidance embedding at the condition's
        ``guidance`` (else ``backbone.student_guidance``) when the transformer has one."""
        b, c, h, w = x.shape
        kwargs = dict(cond.kwargs)
        guidance = kwargs.pop("guidance", None)
        if self.embeds_guidance:
            guidance = torch.full((b,), float(self.cfg.student_guidance)) if guidance is None else guidance
            guidance = guidance.to(x.device, torch.float32)
        else:
            guidance = None
        kwargs = cast_floats(kwargs, self.dtype)
        packed = FluxPipeline._pack_latents(x, b, c, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x.device, x.dtype)
        txt_ids = torch.zeros(kwargs["encoder_hidden_states"].shape[1], 3, device=x.device, dtype=x.dtype)
        out = self.transformer(hidden_states=packed, timestep=t.to(x.dtype) / 1000, guidance=guidance,
                               txt_ids=txt_ids, img_ids=img_ids, return_dict=False, **kwargs)[0]
        f = self.vae_scale_factor
        return FluxPipeline._unpack_latents(out, h * f, w * f, f)

    def features_from_output(self, output) -> torch.Tensor:
        """A double-stream block returns (text tokens, image tokens); the discriminator reads the image
        tokens, one per packed 2x2 patch."""
        return output[1] if isinstance(output, tuple) else output

    def block_feature_shape(self) -> tuple[int, int]:
        channels, _ = super().block_feature_shape()
        return channels, self.latent_size() // 2

    # ------------------------------------------------------------------ sampling and export
    def pipeline(self, student: bool):
        pipe = FlashFluxPipeline(
            scheduler=self.make_scheduler("student" if student else "teacher_sampling"), **self._components())
        pipe.set_progress_bar_config(disable=True)
        return pipe


__all__ = ["FlashFluxPipeline", "FluxBackbone", "FluxFlowMatchScheduler", "sequence_shift"]
