"""What a run is scored with: its teacher and student identities and their diffusers pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from flash_exp.config import BackboneConfig
from flash_exp.metrics.hashing import directory_sha256, file_sha256
from flash_exp.training.rundir import EXPORT_DIR, load_backbone, student_file


def teacher_identity(backbone: BackboneConfig, memo_dir: Path | None = None) -> dict[str, Any]:
    """What identifies the teacher weights (the student adds its LoRA digest): its name and settings and
    a digest of its files, so a teacher rebuilt in place is a new teacher (``memo_dir`` keeps the file
    digests: an unchanged file is not read again)."""
    from flash_exp.backbones.hub import resolve_pretrained

    local = resolve_pretrained(backbone.pretrained, backbone.revision, backbone.variant)
    return {"family": backbone.family, "pretrained": backbone.pretrained, "revision": backbone.revision,
            "variant": backbone.variant, "dtype": backbone.dtype,
            "weights_sha256": directory_sha256(Path(local), memo_dir)}


def run_models(run_dir: Path, cache_dir: Path) -> tuple[BackboneConfig, dict[str, Any], dict[str, Any]]:
    """The run's backbone config and what identifies its teacher and its student (the teacher plus the
    exported LoRA's digest; ``cache_dir`` memoises the digests); raises when the run has no export."""
    backbone = load_backbone(run_dir)
    weights = student_file(run_dir)
    if weights is None:
        raise FileNotFoundError(f"{run_dir} has no exported student in {EXPORT_DIR}/")
    teacher = teacher_identity(backbone, cache_dir)
    return backbone, teacher, {**teacher, "lora_sha256": file_sha256(weights, cache_dir)}


class RunPipelines:
    """A run's diffusers pipeline for one sampler at a time, loaded on first use: the student (the
    exported LoRA, the student scheduler) or the teacher (no LoRA, the teacher_sampling scheduler)."""

    def __init__(self, backbone: BackboneConfig, lora_dir: Path, device: torch.device) -> None:
        self.backbone, self.lora_dir, self.device = backbone, lora_dir, device
        self._sampler: str | None = None
        self._pipe: Any = None

    def get(self, sampler: str) -> Any:
        """The pipeline of ``sampler`` (``student`` or ``teacher``), loaded when it is not the current one."""
        if sampler != self._sampler:
            from flash_exp.backbones import load_pipeline

            self._pipe = None  # release the other sampler's weights before loading
            student = sampler == "student"
            self._pipe = load_pipeline(self.backbone, self.lora_dir if student else None,
                                       sampler="student" if student else "teacher_sampling").to(self.device)
            self._sampler = sampler
        return self._pipe
