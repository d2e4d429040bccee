"""PixArt-alpha (family ``pixart``): ``PixArtTransformer2DModel`` (epsilon, learned sigma), T5 encoder.

- Text: T5 hidden states at max length 120 with their attention mask (``encoder_attention_mask``),
  as ``PixArtAlphaPipeline.encode_prompt`` (captions are not cleaned: ``clean_caption=False``). Captions
  are lowercased and stripped first (:func:`pipeline_caption`), the pipeline's rule even without
  cleaning, so the student sees in training the text a pipeline gives it at inference (the official T5
  embedder keeps case).
- Micro-conditioning: when the transformer uses it (``use_additional_conditions``: the 1024 model,
  ``sample_size == 128``), ``added_cond_kwargs`` holds ``resolution`` (B, 2) = (R, R) and
  ``aspect_ratio`` (B, 1) = 1, as the official code and the pipeline at R x R; otherwise both are None.
- Learned sigma: the transformer has ``out_channels == 2 * latent channels``; the epsilon is the
  first half, the variance channels are dropped (the pipeline does the same after CFG, which commutes).
- LoRA: diffusers has no LoRA loader for this model or pipeline, so the adapter is PEFT's
  (``peft.get_peft_model``), with rank, alpha (explicit: the published Flash PixArt uses peft's old
  default 8 with rank 64) and targets from the config. The teacher is the same model with the adapter
  layers disabled.
- Export: a PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) that
  ``PeftModel.from_pretrained(PixArtTransformer2DModel.from_pretrained(base, subfolder="transformer"),
  export_dir)`` loads; ``PixArtAlphaPipeline.from_pretrained(base, transformer=that)`` samples with it.
- Sampling at the training resolution: the pipeline's ``use_resolution_binning`` maps a request to
  the nearest aspect-ratio bin of the model's native size; at 1024 x 1024 on the 1024 model this is
  the identity. The training-time pipeline turns it off so that any training resolution samples as is.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel
from torch import nn
from transformers import T5EncoderModel, T5Tokenizer

from flash_exp.backbones.common import (
    STUDENT_ADAPTER,
    TRAINING_ADAPTER,
    TransformerBackbone,
    cast_floats,
    peft_lora_config,
)
from flash_exp.backbones.condition import Condition
from flash_exp.backbones.lora_files import PEFT_FILE

MAX_LENGTH = 120  # T5 tokens, PixArt-alpha


def pipeline_caption(text: str) -> str:
    """``text`` as ``PixArtAlphaPipeline.encode_prompt`` tokenizes it with ``clean_caption=False``:
    lowercased, surrounding whitespace stripped (``clean_caption=True`` lowercases as well)."""
    return text.lower().strip()


class FlashPixArtAlphaPipeline(PixArtAlphaPipeline):
    """``PixArtAlphaPipeline`` sampling exactly at the requested size with uncleaned captions, as in
    training. A user's plain pipeline gives the same images at the model's native sizes."""

    def __call__(self, *args, use_resolution_binning: bool = False, clean_caption: bool = False, **kwargs):
        return super().__call__(*args, use_resolution_binning=use_resolution_binning,
                                clean_caption=clean_caption, **kwargs)


class PixArtBackbone(TransformerBackbone):
    pipeline_class = PixArtAlphaPipeline
    denoiser_class = PixArtTransformer2DModel

    def __init__(self, cfg):
        super().__init__(cfg)
        self._null_cache: Condition | None = None

    # ------------------------------------------------------------------ loading
    def _load_text_encoders(self, path: str, kw: dict) -> None:
        self.tokenizer = T5Tokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        self.text_encoder = T5EncoderModel.from_pretrained(path, subfolder="text_encoder",
                                                           torch_dtype=self.dtype, **kw)

    def text_encoders(self) -> list[nn.Module]:
        return [self.text_encoder]

    def _attach_lora(self, base: nn.Module) -> nn.Module:
        from peft import get_peft_model

        self.peft_model = get_peft_model(base, peft_lora_config(self.cfg))
        return self.peft_model

    def _add_lora(self, config, name: str) -> None:
        self.peft_model.add_adapter(name, config)

    @property
    def learned_sigma(self) -> bool:
        return self.transformer.config.out_channels == 2 * self.vae.config.latent_channels

    # ------------------------------------------------------------------ conditions
    def added_cond_kwargs(self, batch_size: int, device, dtype) -> dict:
        if not self.transformer.use_additional_conditions:
            return {"resolution": None, "aspect_ratio": None}
        r = float(self.cfg.resolution)
        return {"resolution": torch.tensor([[r, r]], device=device, dtype=dtype).expand(batch_size, -1).clone(),
                "aspect_ratio": torch.ones(batch_size, 1, device=device, dtype=dtype)}

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """``encoder_hidden_states`` (B, 120, D), ``encoder_attention_mask`` (B, 120), ``added_cond_kwargs``."""
        tokens = self.tokenizer([pipeline_caption(p) for p in prompts], padding="max_length", max_length=MAX_LENGTH, truncation=True,
                                add_special_tokens=True, return_tensors="pt")
        device = self.text_device
        mask = tokens.attention_mask.to(device)
        embeds = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask)[0]
        return Condition(kwargs={
            "encoder_hidden_states": embeds,
            "encoder_attention_mask": mask,
            "added_cond_kwargs": self.added_cond_kwargs(len(prompts), device, embeds.dtype),
        })

    def null_condition(self, batch_size: int) -> Condition:
        cached = self._null_cache
        if cached is None or cached.kwargs["encoder_hidden_states"].device != self.text_device:
            if self.cfg.null_condition == "zero":
                cached = self.encode_prompts([""])
                cached.kwargs["encoder_hidden_states"] = torch.zeros_like(cached.kwargs["encoder_hidden_states"])
            else:
                text = self.cfg.negative_prompt if self.cfg.null_condition == "negative_prompt" else ""
                cached = self.encode_prompts([text])
            self._null_cache = cached
        return cached.select(torch.zeros(batch_size, dtype=torch.long))

    # ------------------------------------------------------------------ denoiser
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        out = self.transformer(x, timestep=t, return_dict=False, **cast_floats(cond.kwargs, self.dtype))[0]
        if self.learned_sigma:  # epsilon, then the learned variance
            out = out[:, : self.vae.config.latent_channels]
        return out

    # ------------------------------------------------------------------ sampling and export
    def pipeline(self, student: bool):
        pipe = FlashPixArtAlphaPipeline(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae, transformer=self.transformer,
            scheduler=self.make_scheduler("student" if student else "teacher_sampling"),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def export(self, directory: Path) -> Path:
        """A PEFT adapter directory: ``adapter_config.json`` + ``adapter_model.safetensors``."""
        directory.mkdir(parents=True, exist_ok=True)
        self.peft_model.save_pretrained(str(directory), safe_serialization=True, selected_adapters=[TRAINING_ADAPTER])
        return directory / PEFT_FILE

    @classmethod
    def load_student_components(cls, path: str, lora_dir: Path, dtype: torch.dtype, extra: dict) -> dict:
        """The Flash PixArt route: the base transformer wrapped by ``PeftModel.from_pretrained``."""
        from peft import PeftModel

        transformer = PixArtTransformer2DModel.from_pretrained(path, subfolder="transformer", torch_dtype=dtype,
                                                               **extra)
        return {"transformer": PeftModel.from_pretrained(transformer, str(lora_dir), adapter_name=STUDENT_ADAPTER)}


__all__ = ["FlashPixArtAlphaPipeline", "PixArtBackbone", "pipeline_caption"]
