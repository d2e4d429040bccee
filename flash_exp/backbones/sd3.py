"""Stable Diffusion 3 (family ``sd3``, prediction ``flow``): ``SD3Transformer2DModel`` (MMDiT), flow matching.

SD3.5 (``backbone=sd35``, ``sd35_large``) is this family: its MMDiT-X dual attention blocks (an image-only
``attn2`` beside the joint attention) and QK RMS norm are options of ``SD3Transformer2DModel`` read from the
checkpoint's config (``dual_attention_layers``, ``qk_norm``), so nothing here depends on them.

- Parametrisation: the model predicts the velocity v = eps - x0 at x_t = (1 - s) x0 + s eps with
  s = t / 1000; :class:`~flash_exp.backbones.noise_schedule.NoiseSchedule` (``flow``) turns it into
  x0 = x_t - s v. Every loss of the method (distillation, GAN re-noising, DMD) works on x0, so the DMD
  normaliser mean|x0_student - x0_real| is computed on x0 (the official ``flash_sd3`` code used the
  teacher's velocity there, and did not scale the score difference by sigma; both are fixed by
  construction here, see ``tests/test_backbones.py::test_flow_dmd_works_on_x0``).
- Teacher: the pipeline's ``FlowMatchEulerDiscreteScheduler`` with its timestep shift (3.0 for
  SD3-medium) drives the K-step rollout (``make_scheduler("teacher")``); its timesteps are shifted
  s * 1000, which the noise schedule reads back as s.
- Student sampler: the stock diffusers ``FlowMatchEulerDiscreteScheduler`` (same shift), 1-4 Euler
  steps without CFG. It applies no consistency boundary scalings, so neither does training: the
  student's x0 is x_t - s v, as the official ``flash_sd3``. The published Flash SD3 samples with ``FlashFlowMatchEulerDiscreteScheduler``,
  which exists only in the fork ``initml/diffusers@clement/feature/flash_sd3``; stock diffusers has
  no equivalent, so few-step samples here use stock Euler timesteps.
- Text: ``StableDiffusion3Pipeline.encode_prompt`` itself (CLIP-L + CLIP-G penultimate states,
  padded to the joint dimension, then the T5 tokens; pooled = both CLIP projections). T5 is optional:
  when the pipeline directory has no ``text_encoder_3`` the T5 part is zeros, as diffusers does and as
  Flash SD3 trained (``USE_T5: False``).
- Null condition: the configured negative prompt (Flash SD3's long fixed one); the training-time
  pipeline uses it for the teacher's CFG samples too.
- VAE: latents are (z - shift_factor) * scaling_factor (handled by the common VAE code).
- Export: diffusers LoRA via ``StableDiffusion3Pipeline.save_lora_weights(transformer_lora_layers=...,
  transformer_lora_adapter_metadata=...)``; users load it with ``pipe.load_lora_weights``.
"""

from __future__ import annotations

import torch
from diffusers import SD3Transformer2DModel, StableDiffusion3Pipeline
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer

from flash_exp.backbones.common import TransformerBackbone, cast_floats
from flash_exp.backbones.condition import Condition

MAX_T5_LENGTH = 256  # the pipeline's default max_sequence_length


class FlashStableDiffusion3Pipeline(StableDiffusion3Pipeline):
    """``StableDiffusion3Pipeline`` whose CFG uses the training null condition (the configured negative
    prompt) when no negative prompt is given."""

    default_negative_prompt: str | None = None

    def __call__(self, *args, **kwargs):
        if (self.default_negative_prompt and kwargs.get("negative_prompt") is None
                and kwargs.get("negative_prompt_embeds") is None):
            kwargs["negative_prompt"] = self.default_negative_prompt
        return super().__call__(*args, **kwargs)


class StableDiffusion3Backbone(TransformerBackbone):
    pipeline_class = StableDiffusion3Pipeline
    denoiser_class = SD3Transformer2DModel

    def __init__(self, cfg):
        super().__init__(cfg)
        self._null_cache: Condition | None = None
        self._text_pipe: StableDiffusion3Pipeline | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def pipeline_load_kwargs(cls, path: str) -> dict:
        """Without T5 in the directory the pipeline needs ``text_encoder_3=None, tokenizer_3=None``
        (the documented way to drop T5); it then uses zeros for the T5 tokens."""
        index = StableDiffusion3Pipeline.load_config(path)
        if index.get("text_encoder_3", [None])[0] is None:
            return {"text_encoder_3": None, "tokenizer_3": None}
        return {}

    def _check_prediction(self) -> None:
        name = self.model_index["scheduler"][1]
        if self.cfg.prediction != "flow" or "FlowMatch" not in name:
            raise ValueError(
                f"backbone.prediction={self.cfg.prediction!r} with a {name} teacher scheduler: SD3 is a "
                "flow-matching model, set backbone.prediction=flow"
            )

    def _load_text_encoders(self, path: str, kw: dict) -> None:
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        self.tokenizer_2 = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw)
        self.text_encoder = CLIPTextModelWithProjection.from_pretrained(
            path, subfolder="text_encoder", torch_dtype=self.dtype, **kw)
        self.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            path, subfolder="text_encoder_2", torch_dtype=self.dtype, **kw)
        self.tokenizer_3 = self.text_encoder_3 = None
        if self.model_index.get("text_encoder_3", [None])[0] is not None:
            from transformers import T5EncoderModel, T5TokenizerFast

            self.tokenizer_3 = T5TokenizerFast.from_pretrained(path, subfolder="tokenizer_3", **kw)
            self.text_encoder_3 = T5EncoderModel.from_pretrained(
                path, subfolder="text_encoder_3", torch_dtype=self.dtype, **kw)

    def text_encoders(self) -> list[nn.Module]:
        return [m for m in (self.text_encoder, self.text_encoder_2, self.text_encoder_3) if m is not None]

    # ------------------------------------------------------------------ conditions
    def _components(self) -> dict:
        return dict(transformer=self.transformer, vae=self.vae, text_encoder=self.text_encoder,
                    tokenizer=self.tokenizer, text_encoder_2=self.text_encoder_2, tokenizer_2=self.tokenizer_2,
                    text_encoder_3=self.text_encoder_3, tokenizer_3=self.tokenizer_3)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """``encoder_hidden_states`` (B, 77 + 256, joint dim) and ``pooled_projections`` (B, 2 x proj)."""
        if self._text_pipe is None:  # a plain attribute: not a module, shares the components
            self._text_pipe = StableDiffusion3Pipeline(scheduler=None, **self._components())
        embeds, _, pooled, _ = self._text_pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.text_device,
            do_classifier_free_guidance=False, max_sequence_length=MAX_T5_LENGTH,
        )
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

    # ------------------------------------------------------------------ denoiser
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        return self.transformer(hidden_states=x, timestep=t, return_dict=False,
                                **cast_floats(cond.kwargs, self.dtype))[0]

    def features_from_output(self, output) -> torch.Tensor:
        """A joint block returns (text tokens, image tokens); the discriminator reads the image tokens."""
        return output[1] if isinstance(output, tuple) else output

    # ------------------------------------------------------------------ sampling and export
    def pipeline(self, student: bool):
        pipe = FlashStableDiffusion3Pipeline(
            scheduler=self.make_scheduler("student" if student else "teacher_sampling"), **self._components())
        if self.cfg.null_condition == "negative_prompt":
            pipe.default_negative_prompt = self.cfg.negative_prompt
        pipe.set_progress_bar_config(disable=True)
        return pipe


__all__ = ["FlashStableDiffusion3Pipeline", "StableDiffusion3Backbone"]
