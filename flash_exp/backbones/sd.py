"""Stable Diffusion 1.x/2.x (family ``sd``): UNet, CLIP text encoder (last layer), AutoencoderKL."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from flash_exp.backbones.base import DTYPES
from flash_exp.backbones.common import (
    STUDENT_ADAPTER,
    TRAINING_ADAPTER,
    DiffusersBackbone,
    cast_floats,
    lora_layers,
    peft_lora_config,
)
from flash_exp.backbones.condition import Condition
from flash_exp.backbones.lora_files import (
    LORA_FILE,
    check_lora_attached,
    lora_weights_file,
    recorded_module_count,
)


class StableDiffusionBackbone(DiffusersBackbone):
    pipeline_class = StableDiffusionPipeline
    denoiser_attr = "unet"
    denoiser_class = UNet2DConditionModel

    @classmethod
    def pipeline_load_kwargs(cls, path: str) -> dict:
        return {"safety_checker": None, "requires_safety_checker": False}

    def __init__(self, cfg):
        super().__init__(cfg)
        self._null_cache: Condition | None = None

    # ------------------------------------------------------------------ text
    def _load_text_encoders(self, path: str, kw: dict) -> None:
        self.tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kw)
        self.text_encoder = CLIPTextModel.from_pretrained(
            path, subfolder="text_encoder", torch_dtype=self.dtype, **kw
        )

    def text_encoders(self) -> list[nn.Module]:
        return [self.text_encoder]

    @torch.no_grad()
    def _embed(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0]

    def encode_prompts(self, prompts: list[str]) -> Condition:
        return Condition(kwargs={"encoder_hidden_states": self._embed(prompts)})

    def _null_prompt(self) -> str:
        return self.cfg.negative_prompt if self.cfg.null_condition == "negative_prompt" else ""

    def null_condition(self, batch_size: int) -> Condition:
        """One encoded null condition, cached, repeated over the batch; ``zero`` zeroes every tensor."""
        cached = self._null_cache
        if cached is None or cached.kwargs["encoder_hidden_states"].device != self.text_device:
            cached = self.encode_prompts([self._null_prompt()])
            if self.cfg.null_condition == "zero":
                cached = Condition(kwargs=_zero_like(cached.kwargs, keep=self._nonzero_null_keys))
            self._null_cache = cached
        return cached.select(torch.zeros(batch_size, dtype=torch.long))

    _nonzero_null_keys: tuple[str, ...] = ()

    # ------------------------------------------------------------------ task conditioning
    def add_context_tokens(self, cond: Condition, tokens: torch.Tensor) -> Condition:
        """Tokens appended to ``encoder_hidden_states``: the UNet cross-attends to any sequence length."""
        states = cond.kwargs["encoder_hidden_states"]
        if tokens.shape[-1] != states.shape[-1]:
            raise ValueError(f"context tokens of width {tokens.shape[-1]} do not match the text states' "
                             f"width {states.shape[-1]} (cross_attention_dim of this UNet)")
        kwargs = dict(cond.kwargs, encoder_hidden_states=torch.cat([states, tokens.to(states)], dim=1))
        return Condition(kwargs=kwargs, concat=cond.concat)

    def add_adapter_residuals(self, cond: Condition, residuals: list[torch.Tensor]) -> Condition:
        """``down_intrablock_additional_residuals`` of ``UNet2DConditionModel`` (T2I-Adapter). The UNet
        pops this list while it runs; :meth:`_forward_denoiser` hands it a copy on every call."""
        kwargs = dict(cond.kwargs, down_intrablock_additional_residuals=list(residuals))
        return Condition(kwargs=kwargs, concat=cond.concat)

    def add_class_labels(self, cond: Condition, labels: torch.Tensor) -> Condition:
        if self.unet.class_embedding is None:
            raise ValueError("this UNet has no class embedding (num_class_embeds / class_embed_type unset)")
        return Condition(kwargs=dict(cond.kwargs, class_labels=labels.long()), concat=cond.concat)

    # ------------------------------------------------------------------ denoiser
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        # cast_floats copies dicts and lists, so the residual list the UNet pops is never the condition's
        return self.unet(x, t, return_dict=False, **cast_floats(cond.kwargs, self.dtype))[0]

    def block_feature_shape(self) -> tuple[int, int]:
        if self.cfg.discriminator.feature_module != "mid_block":
            raise ValueError("the SD backbones take discriminator features from the UNet mid_block")
        side = self.latent_size() // 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.unet.config.block_out_channels[-1], side

    # ------------------------------------------------------------------ sampling and export
    def pipeline_components(self) -> dict:
        return dict(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer, unet=self.unet,
                    safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    def pipeline(self, student: bool):
        pipe = self.pipeline_class(
            **self.pipeline_components(),
            scheduler=self.make_scheduler("student" if student else "teacher_sampling"),
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def load_student(self, export_dir: Path) -> None:
        """Make the student the exported one: the training adapter gives way to the export read by
        diffusers' LoRA loader (``load_lora_adapter``, what ``pipe.load_lora_weights`` calls for the UNet)
        as adapter ``flash``; fails, naming both counts, unless every module of the export is attached."""
        self.unet.load_lora_adapter(str(export_dir), weight_name=LORA_FILE, prefix="unet",
                                    adapter_name=STUDENT_ADAPTER)
        check_lora_attached([self.unet], STUDENT_ADAPTER, lora_weights_file(export_dir),
                            recorded_module_count(export_dir))
        self.unet.delete_adapters(TRAINING_ADAPTER)
        self.unet.set_adapter(STUDENT_ADAPTER)
        self._lora_layers = lora_layers(self.unet)


def _zero_like(value, keep: tuple[str, ...] = ()):
    """Zeros shaped like every floating tensor of ``value`` (nested dicts too), except keys in ``keep``."""
    if torch.is_tensor(value):
        return torch.zeros_like(value) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: (v if k in keep else _zero_like(v, keep)) for k, v in value.items()}
    return value


__all__ = ["StableDiffusionBackbone", "DTYPES", "peft_lora_config"]
