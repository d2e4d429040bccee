"""Teacher families behind the :class:`~flash_exp.backbones.base.Backbone` interface."""

from __future__ import annotations

from pathlib import Path

from flash_exp.backbones.base import Backbone, build_scheduler, resolve_pretrained
from flash_exp.config import BackboneConfig


def build_backbone(cfg: BackboneConfig) -> Backbone:
    """Load the teacher named by ``cfg`` and attach the student's LoRA adapter."""
    if cfg.family == "sd":
        from flash_exp.backbones.sd import StableDiffusionBackbone

        return StableDiffusionBackbone(cfg)
    raise ValueError(f"backbone.family={cfg.family!r} has no implementation in this build")


def load_pipeline(cfg: BackboneConfig, lora_dir: Path | None, sampler: str = "student"):
    """A plain diffusers pipeline of the teacher, with the exported student LoRA loaded when given.

    ``sampler`` picks the scheduler: ``student`` (few-step, e.g. LCM trailing) or ``teacher_sampling``.
    This is the route a user of the export takes; evaluation samples through it too.
    """
    import diffusers
    import torch

    from flash_exp.backbones.base import DTYPES

    path = resolve_pretrained(cfg.pretrained)
    pipeline_cls = {"sd": diffusers.StableDiffusionPipeline}.get(cfg.family)
    if pipeline_cls is None:
        raise ValueError(f"backbone.family={cfg.family!r} has no pipeline in this build")
    kwargs = {"safety_checker": None, "requires_safety_checker": False} if cfg.family == "sd" else {}
    pipe = pipeline_cls.from_pretrained(path, torch_dtype=DTYPES.get(cfg.dtype, torch.float32), **kwargs)
    sched_cfg = cfg.student_scheduler if sampler == "student" else cfg.teacher_sampling.scheduler
    pipe.scheduler = build_scheduler(sched_cfg, pipe.scheduler.config)
    if lora_dir is not None:
        pipe.load_lora_weights(str(lora_dir), adapter_name="flash")
    pipe.set_progress_bar_config(disable=True)
    return pipe
