"""What the four diffusers families share: loading from a pipeline directory, freezing, the LoRA, the
VAE, the training noise schedule, the adapter switch and the discriminator taps.

A family subclass names its pipeline class and denoiser, loads its text encoders, encodes prompts and
the null condition, calls its denoiser, and writes its export format.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from torch import nn

from flash_exp.backbones.base import Backbone, resolve_pretrained
from flash_exp.backbones.lora_files import (
    LORA_FILE,
    check_lora_attached,
    lora_weights_file,
    pipeline_modules,
    recorded_module_count,
)
from flash_exp.backbones.noise_schedule import NoiseSchedule
from flash_exp.config import BackboneConfig

TRAINING_ADAPTER = "default"  # peft's name of the student's adapter while it trains (the one exported)


def peft_lora_config(cfg: BackboneConfig) -> PeftLoraConfig:
    """The student's adapter; alpha is always written out (never peft's silent default)."""
    return PeftLoraConfig(
        r=cfg.lora.rank,
        lora_alpha=cfg.lora.alpha,
        init_lora_weights=True if cfg.lora.init == "default" else cfg.lora.init,
        target_modules=list(cfg.lora.targets),
    )


def lora_layers(module: nn.Module) -> list[nn.Module]:
    """The PEFT LoRA layers (one per adapted linear/conv) inside ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def cast_floats(value: Any, dtype: torch.dtype) -> Any:
    """``value`` with every floating tensor (also inside dicts, lists, tuples) cast to ``dtype``."""
    if torch.is_tensor(value):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: cast_floats(v, dtype) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(cast_floats(v, dtype) for v in value)
    return value


STUDENT_ADAPTER = "flash"  # the adapter name of the exported student in a loaded pipeline


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class DiffusersBackbone(Backbone):
    """A teacher loaded from a diffusers pipeline directory (``model_index.json``)."""

    pipeline_class: type  # the diffusers pipeline of the family
    denoiser_attr = "unet"  # subfolder of the denoiser and the pipeline's name for it
    denoiser_class: type

    def __init__(self, cfg: BackboneConfig):
        super().__init__(cfg)
        from diffusers import AutoencoderKL

        path = resolve_pretrained(cfg.pretrained, cfg.revision, cfg.variant)
        self.pretrained_path = path
        self.model_index = dict(self.pipeline_class.load_config(path))
        kw = dict(revision=cfg.revision, variant=cfg.variant)
        base = self.denoiser_class.from_pretrained(path, subfolder=self.denoiser_attr, torch_dtype=self.dtype, **kw)
        setattr(self, self.denoiser_attr, base)
        self.vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=self.dtype, **kw)
        self._load_text_encoders(path, kw)
        self.base_scheduler_config = self._load_scheduler_config(path)
        self._check_prediction()
        self.schedule = NoiseSchedule.from_scheduler(self.make_scheduler("teacher"), cfg.prediction)

        for module in (base, self.vae, *self.text_encoders()):
            module.requires_grad_(False)
            module.eval()
        self.denoiser = self._attach_lora(base)
        for p in base.parameters():  # LoRA weights train in float32 whatever the base dtype
            if p.requires_grad:
                p.data = p.data.float()
        self._lora_layers = lora_layers(base)
        self._named_adapter_params: list[nn.Parameter] = []
        if cfg.gradient_checkpointing:
            base.enable_gradient_checkpointing()

    # ------------------------------------------------------------------ loading
    @property
    def base_denoiser(self) -> nn.Module:
        """The diffusers denoiser (UNet or transformer) holding the LoRA layers."""
        return getattr(self, self.denoiser_attr)

    def _load_scheduler_config(self, path: str) -> dict:
        import diffusers

        scheduler_cls = self.model_index["scheduler"][1]
        return dict(getattr(diffusers, scheduler_cls).load_config(path, subfolder="scheduler"))

    def _check_prediction(self) -> None:
        prediction = self.base_scheduler_config.get("prediction_type", "epsilon")
        if prediction != self.cfg.prediction:
            raise ValueError(
                f"backbone.prediction={self.cfg.prediction!r} but the teacher's scheduler says {prediction!r}"
            )

    def _attach_lora(self, base: nn.Module) -> nn.Module:
        """Add the student's LoRA to ``base`` (diffusers ``add_adapter``); returns the trained module."""
        base.add_adapter(peft_lora_config(self.cfg))
        return base

    def _add_lora(self, config: PeftLoraConfig, name: str) -> None:
        """Add a further adapter ``name`` beside the student's (diffusers ``add_adapter``)."""
        self.base_denoiser.add_adapter(config, adapter_name=name)

    @abc.abstractmethod
    def _load_text_encoders(self, path: str, kw: dict) -> None:
        """Load the family's tokenizers and frozen text encoders from the pipeline directory."""

    @abc.abstractmethod
    def text_encoders(self) -> list[nn.Module]:
        """The frozen text encoders."""

    @property
    def text_device(self) -> torch.device:
        return next(self.text_encoders()[0].parameters()).device

    def num_lora_layers(self) -> int:
        return len(self._lora_layers)

    # ------------------------------------------------------------------ latents
    def latent_size(self) -> int:
        return self.cfg.resolution // 2 ** (len(self.vae.config.block_out_channels) - 1)

    def compute_vae(self) -> nn.Module:
        """The VAE for training-time encode/decode. A float16 VAE that asks for ``force_upcast`` (the
        SDXL VAE overflows in float16) runs as a float32 copy, kept out of the module tree; the
        pipelines keep the float16 one and upcast it themselves."""
        vae = self.vae
        if vae.dtype != torch.float16 or not getattr(vae.config, "force_upcast", False):
            return vae
        upcast = self.__dict__.get("_vae_float32")
        if upcast is None or _device(upcast.decoder) != _device(vae.decoder):
            import copy

            upcast = copy.deepcopy(vae).float()
            self.__dict__["_vae_float32"] = upcast
        return upcast

    def frozen_modules(self) -> list[nn.Module]:
        """The VAE encoder halves (also of the float32 copy) and the text encoders. The VAE decoder
        stays on the compute device: the LPIPS distillation loss decodes inside the step."""
        vaes = [self.vae, *([self.__dict__["_vae_float32"]] if "_vae_float32" in self.__dict__ else [])]
        halves = [m for vae in vaes for m in (vae.encoder, vae.quant_conv) if m is not None]
        return [*halves, *self.text_encoders()]

    def shard_blocks(self) -> list[str]:
        """The class names of the denoiser's blocks that multi-GPU sharding (``trainer.strategy=fsdp``)
        makes units of their own: by default the blocks diffusers keeps whole across devices, the
        denoiser's ``_no_split_modules`` (SD3: ``JointTransformerBlock``; FLUX: ``FluxTransformerBlock``
        and ``FluxSingleTransformerBlock``). A family whose blocks differ overrides this."""
        return list(getattr(type(self.base_denoiser), "_no_split_modules", None) or [])

    def shard_denoiser(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Call the denoiser through ``wrap(denoiser)`` (an FSDP module) from now on. Its LoRA layers
        stay the same modules; the VAE and text encoders are left as they are."""
        if self.denoiser is not self.base_denoiser:
            raise ValueError(f"backbone family {self.cfg.family!r} calls its denoiser through a wrapper "
                             "(peft's PeftModel): trainer.strategy=fsdp does not shard it")
        wrapped = wrap(self.base_denoiser)
        setattr(self, self.denoiser_attr, wrapped)
        self.denoiser = wrapped

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        vae = self.compute_vae()
        with torch.no_grad():
            latents = vae.encode(pixels.to(_device(vae.encoder), vae.dtype)).latent_dist.mode()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.compute_vae()
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        z = latents / vae.config.scaling_factor + shift
        return vae.decode(z.to(vae.dtype)).sample.float()

    def extra_input_channels(self) -> int:
        """The denoiser's ``in_channels`` minus the VAE's latent channels (inpainting UNets: 5, the x4
        upscaler: 3, text to image: 0)."""
        return int(self.base_denoiser.config.in_channels) - int(self.vae.config.latent_channels)

    # ------------------------------------------------------------------ denoiser
    def _set_adapter(self, enabled: bool | str) -> None:
        if not self._named_adapter_params:
            for layer in self._lora_layers:
                layer.enable_adapters(enabled)
            return
        for layer in self._lora_layers:
            if enabled is not False:
                layer.set_adapter(TRAINING_ADAPTER if enabled is True else enabled)
            layer.enable_adapters(enabled is not False)
        # peft's set_adapter freezes the inactive adapters: every adapter keeps training
        for p in self._named_adapter_params:
            p.requires_grad_(True)

    def add_named_adapter(self, name: str) -> list[nn.Parameter]:
        config = peft_lora_config(self.cfg)
        config.init_lora_weights = True  # kaiming A, zero B: the adapter starts as the teacher
        self._add_lora(config, name)
        params = [p for n, p in self.base_denoiser.named_parameters() if f".{name}." in n and "lora_" in n]
        for p in params:
            p.data = p.data.float()
        student = [p for n, p in self.base_denoiser.named_parameters() if f".{TRAINING_ADAPTER}." in n and "lora_" in n]
        self._named_adapter_params = student + params
        self._set_adapter(self._adapter_on)  # diffusers' add_adapter made the new adapter the active one
        return params

    def feature_module(self) -> nn.Module:
        return self.base_denoiser.get_submodule(self.cfg.discriminator.feature_module)

    def feature_shape(self) -> tuple[int, int]:
        if self.cfg.discriminator.input == "output":
            return int(self.vae.config.latent_channels), self.latent_size()
        return self.block_feature_shape()

    @abc.abstractmethod
    def block_feature_shape(self) -> tuple[int, int]:
        """(channels, side) of the ``feature_module``'s output at the training resolution."""

    def export(self, directory: Path) -> Path:
        """diffusers LoRA ``pytorch_lora_weights.safetensors`` written as the diffusers training scripts
        write it: the PEFT state dict (``lora_A`` / ``lora_B`` keys, whatever the targets) under the
        denoiser's prefix, with the adapter config as metadata so that alpha reloads as trained."""
        from peft.utils import get_peft_model_state_dict

        directory.mkdir(parents=True, exist_ok=True)
        name, denoiser = self.denoiser_attr, self.base_denoiser
        metadata = denoiser.peft_config[TRAINING_ADAPTER].to_dict()
        # PEFT holds target_modules as a set, whose order changes from process to process (string hashing);
        # sorted, the same weights always make the same file, and the same lora_sha256 in evaluation results
        metadata["target_modules"] = sorted(metadata["target_modules"])
        self.pipeline_class.save_lora_weights(
            save_directory=directory, safe_serialization=True,
            **{f"{name}_lora_layers": get_peft_model_state_dict(denoiser), f"{name}_lora_adapter_metadata": metadata},
        )
        return directory / LORA_FILE

    # ------------------------------------------------------------------ the user's route
    @classmethod
    def pipeline_load_kwargs(cls, path: str) -> dict:
        """Extra ``from_pretrained`` arguments of the family's pipeline (e.g. components left out)."""
        return {}

    @classmethod
    def load_pipeline(cls, cfg: BackboneConfig, lora_dir: Path | None, sampler: str = "student"):
        """The plain diffusers pipeline from ``cfg.pretrained`` with the export in ``lora_dir`` loaded as
        adapter ``flash``; raises :class:`~flash_exp.backbones.lora_files.LoraLoadError` unless every
        module of the export is attached."""
        from flash_exp.backbones.base import DTYPES, build_scheduler

        path = resolve_pretrained(cfg.pretrained, cfg.revision, cfg.variant)
        dtype = DTYPES[cfg.dtype]
        extra = {"variant": cfg.variant} if cfg.variant else {}
        components = {} if lora_dir is None else cls.load_student_components(path, Path(lora_dir), dtype, extra)
        pipe = cls.pipeline_class.from_pretrained(path, torch_dtype=dtype, **extra, **cls.pipeline_load_kwargs(path),
                                                  **components)
        sched_cfg = cfg.student_scheduler if sampler == "student" else cfg.teacher_sampling.scheduler
        pipe.scheduler = build_scheduler(sched_cfg, pipe.scheduler.config)
        if lora_dir is not None:
            if not components:
                pipe.load_lora_weights(str(lora_dir), adapter_name=STUDENT_ADAPTER)
            check_lora_attached(pipeline_modules(pipe), STUDENT_ADAPTER, lora_weights_file(lora_dir),
                                recorded_module_count(Path(lora_dir)))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @classmethod
    def load_student_components(cls, path: str, lora_dir: Path, dtype: torch.dtype, extra: dict) -> dict:
        """Pipeline components that carry the student (adapter ``flash``), for families without a
        diffusers LoRA loader. Empty (the default): the export is loaded with ``pipe.load_lora_weights``.
        """
        return {}


class TransformerBackbone(DiffusersBackbone):
    """A patchified transformer denoiser (PixArt, SD3): features are tokens of one block."""

    denoiser_attr = "transformer"

    def block_feature_shape(self) -> tuple[int, int]:
        name = self.cfg.discriminator.feature_module
        blocks = self.transformer.transformer_blocks
        if not name.startswith("transformer_blocks."):
            raise ValueError(
                f"backbone.discriminator.feature_module={name!r}: the transformer backbones take features "
                f"from a block, transformer_blocks.0 .. transformer_blocks.{len(blocks) - 1}"
            )
        try:
            self.feature_module()
        except AttributeError as err:
            raise ValueError(
                f"backbone.discriminator.feature_module={name!r} does not exist; this transformer has "
                f"transformer_blocks.0 .. transformer_blocks.{len(blocks) - 1}"
            ) from err
        c = self.transformer.config
        return c.num_attention_heads * c.attention_head_dim, self.latent_size() // c.patch_size


__all__ = ["STUDENT_ADAPTER", "TRAINING_ADAPTER", "DiffusersBackbone", "TransformerBackbone", "cast_floats", "lora_layers",
           "peft_lora_config"]
