"""A run's trained student without the training module: the backbone and the task, nothing else.

Export, evaluation and sampling need the student only: the backbone (teacher weights plus the
student LoRA) and the task's module. They do not build the distiller, its discriminator head, LPIPS
or DMD2's fake-score adapter, so a run trained with ``loss.distill.type=lpips`` loads without the
VGG16 file. The student's weights come from a checkpoint (the ``backbone.*`` / ``task.*`` entries of
its state dict, the keys :class:`~flash_exp.training.module.FlashModule` saves them under) or from
the export (read by diffusers' LoRA loader, as its users read it).
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

from flash_exp.backbones import build_backbone
from flash_exp.config import TrainConfig, register_resolvers, validate
from flash_exp.tasks import build_task
from flash_exp.training.checkpoints import load_checkpoint
from flash_exp.training.rundir import CONFIG_FILE, EXPORT_DIR


class Student(nn.Module):
    """The backbone and the task of a run, under the attribute names the training module uses."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.task = build_task(cfg.task)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights training updates (the student LoRA, a task's trained modules)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}


def run_config(run_dir: Path) -> TrainConfig:
    """The typed training config of a run directory."""
    cfg_path = Path(run_dir) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: is {run_dir} a flash_exp run directory?")
    register_resolvers()
    return validate(OmegaConf.load(cfg_path))


def load_run(run_dir: Path, checkpoint: str = "last") -> tuple[TrainConfig, Student, int]:
    """The run's typed config, its student with the weights of checkpoint ``last`` (or a file name) and
    the step the checkpoint was written at."""
    run_dir = Path(run_dir)
    cfg = run_config(run_dir)
    ckpt = run_dir / "checkpoints" / (f"{checkpoint}.ckpt" if not checkpoint.endswith(".ckpt") else checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    student = Student(cfg)
    saved = load_checkpoint(ckpt)  # weights_only: a pickled payload is refused, not run
    student.load_state_dict(saved["state_dict"], strict=False)
    missing = set(student.trainable_state_dict()) - set(saved["state_dict"])
    if missing:
        raise ValueError(f"{ckpt} lacks {len(missing)} trained weights, e.g. {sorted(missing)[:2]}")
    return cfg, student, int(saved.get("global_step", 0))


def load_exported_run(run_dir: Path) -> tuple[TrainConfig, Student]:
    """The run's typed config and its student read from the export (``<run>/export``, by diffusers'
    LoRA loader as its users read it), not the checkpoint: what evaluation scores."""
    cfg = run_config(Path(run_dir))
    student = Student(cfg)
    student.backbone.load_student(Path(run_dir) / EXPORT_DIR)
    return cfg, student


__all__ = ["Student", "load_exported_run", "load_run", "run_config"]
