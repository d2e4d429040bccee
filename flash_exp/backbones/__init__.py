"""Teacher families behind the :class:`~flash_exp.backbones.base.Backbone` interface.

| family | module | denoiser | export (what users load) |
|---|---|---|---|
| ``sd`` | :mod:`.sd` | UNet (eps / v) | diffusers LoRA, ``pipe.load_lora_weights`` |
| ``sdxl`` | :mod:`.sdxl` | UNet, two CLIP encoders, micro-conditioning | diffusers LoRA, ``pipe.load_lora_weights`` |
| ``pixart`` | :mod:`.pixart` | PixArt-alpha transformer, T5 | PEFT adapter, ``PeftModel.from_pretrained`` |
| ``sd3`` | :mod:`.sd3` | MMDiT (SD3, SD3.5 Large), MMDiT-X (SD3.5 Medium), flow matching | diffusers LoRA, ``pipe.load_lora_weights`` |
| ``flux`` | :mod:`.flux` | FLUX transformer, packed latents, guidance embedding | diffusers LoRA, ``pipe.load_lora_weights`` |

Imports are lazy: ``flash_exp.backbones.hub`` (the weights source) loads without torch or diffusers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flash_exp.config import FAMILIES

if TYPE_CHECKING:
    from flash_exp.backbones.base import Backbone
    from flash_exp.config import BackboneConfig

# where each family of config.FAMILIES is implemented (tests/test_layout.py checks the two agree)
FAMILY_CLASSES = {
    "sd": ("flash_exp.backbones.sd", "StableDiffusionBackbone"),
    "sdxl": ("flash_exp.backbones.sdxl", "StableDiffusionXLBackbone"),
    "pixart": ("flash_exp.backbones.pixart", "PixArtBackbone"),
    "sd3": ("flash_exp.backbones.sd3", "StableDiffusion3Backbone"),
    "flux": ("flash_exp.backbones.flux", "FluxBackbone"),
}


def backbone_class(family: str) -> type:
    import importlib

    if family not in FAMILY_CLASSES:
        raise ValueError(f"backbone.family={family!r} has no implementation; known: {', '.join(FAMILIES)}")
    module, name = FAMILY_CLASSES[family]
    return getattr(importlib.import_module(module), name)


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """Load the teacher named by ``cfg`` and attach the student's LoRA adapter."""
    return backbone_class(cfg.family)(cfg)


def load_pipeline(cfg: BackboneConfig, lora_dir: Path | None, sampler: str = "student"):
    """A plain diffusers pipeline of the teacher, with the exported student loaded when given.

    ``sampler`` picks the scheduler: ``student`` (few-step, e.g. LCM trailing) or ``teacher_sampling``.
    This is the route a user of the export takes (``pipe.load_lora_weights(dir)`` for SD, SDXL,
    SD3 and FLUX; ``PeftModel.from_pretrained(transformer, dir)`` for PixArt); evaluation samples through it too.
    """
    return backbone_class(cfg.family).load_pipeline(cfg, lora_dir, sampler)


__all__ = ["FAMILY_CLASSES", "backbone_class", "build_backbone", "load_pipeline"]
