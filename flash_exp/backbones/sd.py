"""Stable Diffusion 1.x/2.x (family ``sd``): UNet, CLIP text encoder (last layer), AutoencoderKL."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig as PeftLoraConfig
from torch import nn
from transformers import CLIPTextModel, CLIPTokenizer

from flash_exp.backbones.base import DTYPES, Backbone, resolve_pretrained
from flash_exp.backbones.condition import Condition
from flash_exp.config import BackboneConfig
from flash_exp.method.noise import NoiseSchedule

LORA_FILE = "pytorch_lora_weights.safetensors"


def peft_lora_config(cfg: BackboneConfig) -> PeftLoraConfig:
    """The student's adapter; alpha is always written out (never peft's silent default)."""
    return PeftLoraConfig(
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        init_lora_weights=True if cfg.lora.init == "default" else cfg.lora.init,
        target_modules=list(cfg.lora.targets),
    )


class StableDiffusionBackbone(Backbone):
    pipeline_class = StableDiffusionPipeline

    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        path = resolve_pretrained(cfg.pretrained)
        self.pretrained_path = path
        kw = dict(revision=cfg.revision, variant=cfg.variant)
        self.unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=self.dtype, **kw)
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=self.dtype, **kw)
        self._load_text_encoders(path, kw)
        scheduler_cls = self.pipeline_class.load_config(path)["scheduler"][1]
        import diffusers

        self.base_scheduler_config = dict(
            getattr(diffusers, scheduler_cls).load_config(path, subfolder="scheduler")
        )
        prediction = self.base_scheduler_config.get("prediction_type", "epsilon")
        if prediction != cfg.prediction:
            raise ValueError(
                f"backbone.prediction={cfg.prediction!r} but the teacher's scheduler says {prediction!r}"
            )
        self.schedule = NoiseSchedule.from_scheduler(self.make_scheduler("teacher"), cfg.prediction)

        for module in (self.unet, self.vae, *self.text_encoders()):
            module.requires_grad_(False)
            module.eval()
        self.unet.add_adapter(peft_lora_config(cfg))
        for p in self.unet.parameters():  # LoRA weights train in float32 whatever the base dtype
            if p.requires_grad:
                p.data = p.data.float()
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.denoiser = self.unet
        self._null_cache: torch.Tensor | None = None

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

    def null_condition(self, batch_size: int) -> Condition:
        if self._null_cache is None or self._null_cache.device != self.text_encoder.device:
            empty = self._embed([self.cfg.negative_prompt if self.cfg.null_condition == "negative_prompt" else ""])
            self._null_cache = torch.zeros_like(empty) if self.cfg.null_condition == "zero" else empty
        return Condition(kwargs={"encoder_hidden_states": self._null_cache.expand(batch_size, -1, -1)})

    # ------------------------------------------------------------------ latents
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            latents = self.vae.encode(pixels.to(self.vae.device, self.dtype)).latent_dist.mode()
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * self.vae.config.scaling_factor).float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        z = latents / self.vae.config.scaling_factor + shift
        return self.vae.decode(z.to(self.dtype)).sample.float()

    # ------------------------------------------------------------------ denoiser
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        kwargs = {k: (v.to(self.dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
                  for k, v in cond.kwargs.items()}
        return self.unet(x, t, return_dict=False, **kwargs)[0]

    def _set_adapter(self, enabled: bool) -> None:
        if enabled:
            self.unet.enable_adapters()
        else:
            self.unet.disable_adapters()

    def feature_module(self) -> nn.Module:
        return self.unet.get_submodule(self.cfg.discriminator.feature_module)

    def latent_size(self) -> int:
        return self.cfg.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)

    def feature_shape(self) -> tuple[int, int]:
        if self.cfg.discriminator.feature_module != "mid_block":
            raise ValueError("the SD backbones take discriminator features from the UNet mid_block")
        side = self.latent_size() // 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.unet.config.block_out_channels[-1], side

    # ------------------------------------------------------------------ sampling and export
    def pipeline(self, student: bool):
        pipe = self.pipeline_class(
            vae=self.vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.make_scheduler("student" if student else "teacher_sampling"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def export(self, directory: Path) -> Path:
        """diffusers LoRA: ``pytorch_lora_weights.safetensors`` with the adapter config as metadata."""
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft.utils import get_peft_model_state_dict

        directory.mkdir(parents=True, exist_ok=True)
        layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet))
        self.pipeline_class.save_lora_weights(
            save_directory=directory,
            unet_lora_layers=layers,
            unet_lora_adapter_metadata=self.unet.peft_config["default"].to_dict(),
            safe_serialization=True,
        )
        return directory / LORA_FILE


__all__ = ["StableDiffusionBackbone", "DTYPES", "peft_lora_config"]
