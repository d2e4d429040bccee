"""Stable Diffusion XL (family ``sdxl``): UNet (epsilon), two CLIP text encoders, micro-conditioning.

- Text: ``CLIPTextModel`` (CLIP-L) and ``CLIPTextModelWithProjection`` (OpenCLIP-G); the penultimate
  hidden states of both are concatenated (B, 77, 768 + 1280) and the projected pooled output of the
  second is the ``text_embeds`` (B, 1280) of ``added_cond_kwargs``, as ``StableDiffusionXLPipeline``.
- Micro-conditioning: ``time_ids`` = (original size, crop top-left, target size) = (R, R, 0, 0, R, R)
  at the training resolution R, as the official code (1024, 1024, 0, 0, 1024, 1024) and as the
  pipeline does by default when sampling at R x R.
- Null condition (``backbone.null_condition``): ``zero`` (the Flash SDXL setting) zeroes the prompt
  embeddings and the pooled embedding and keeps ``time_ids``; this is also what the pipeline does for
  its own CFG when ``force_zeros_for_empty_prompt`` is set (SDXL base). ``empty_prompt`` and
  ``negative_prompt`` encode that text.
- Export: diffusers LoRA via ``StableDiffusionXLPipeline.save_lora_weights`` with the adapter config
  (rank and alpha) as metadata; users load it with ``pipe.load_lora_weights``.
"""

from __future__ import annotations

import torch
from diffusers import StableDiffusionXLPipeline
from torch import nn
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from flash_exp.backbones.condition import Condition
from flash_exp.backbones.sd import StableDiffusionBackbone


class StableDiffusionXLBackbone(StableDiffusionBackbone):
    pipeline_class = StableDiffusionXLPipeline

    @classmethod
    def pipeline_load_kwargs(cls, path: str) -> dict:
        return {}
    _nonzero_null_keys = ("time_ids",)

    def _load_text_encoders(self, path: str, kw: dict) -> None:
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        self.tokenizer_2 = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kw)
        self.text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", torch_dtype=self.dtype, **kw
        )
        self.text_encoder_2 = CLIPTextModelWithProjection.from_pretrained(
            path, subfolder="text_encoder_2", torch_dtype=self.dtype, **kw
        )

    def text_encoders(self) -> list[nn.Module]:
        return [self.text_encoder, self.text_encoder_2]

    def time_ids(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B, 6): original size (R, R), crop top-left (0, 0), target size (R, R)."""
        r = float(self.cfg.resolution)
        return torch.tensor([[r, r, 0.0, 0.0, r, r]], device=device).expand(batch_size, -1).clone()

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """``encoder_hidden_states`` (B, L, D1 + D2) and ``added_cond_kwargs`` {text_embeds, time_ids}."""
        hidden, pooled = [], None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            out = encoder(ids.to(encoder.device), output_hidden_states=True)
            if out[0].ndim == 2:  # the projected pooled output of CLIPTextModelWithProjection
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        embeds = torch.cat(hidden, dim=-1)
        return Condition(kwargs={
            "encoder_hidden_states": embeds,
            "added_cond_kwargs": {"text_embeds": pooled,
                                  "time_ids": self.time_ids(len(prompts), embeds.device).to(embeds.dtype)},
        })

    def pipeline_components(self) -> dict:
        return dict(vae=self.vae, text_encoder=self.text_encoder, text_encoder_2=self.text_encoder_2,
                    tokenizer=self.tokenizer, tokenizer_2=self.tokenizer_2, unet=self.unet,
                    force_zeros_for_empty_prompt=self.model_index.get("force_zeros_for_empty_prompt", True))


__all__ = ["StableDiffusionXLBackbone"]
