"""A built toy teacher on held-out conditions: PSNR / SSIM and the task's condition metrics at the toy
sampling budget, through the training config ``backbone=toy task=<task>``."""

from __future__ import annotations

from pathlib import Path

from flash_exp.config import toy_paths
from flash_exp.toyworld.tasks.settings import TaskBuildSettings


def toy_task_config(task: str, root: Path, out: Path, *overrides: str):
    """The training config of ``backbone=toy task=<task>`` with the teacher built under ``out`` and the
    toy world under ``root`` (composed as ``python -m flash_exp.train`` would)."""
    from flash_exp.config import compose_train_config

    def listed(paths: list[str]) -> str:
        return "[" + ",".join(paths) + "]"

    if task == "faceswap":
        train, heldout = toy_paths.faces_shards("train", out), toy_paths.faces_shards("heldout", out)
    else:
        train, heldout = toy_paths.train_shards(root), toy_paths.heldout_shards(root)
    items = ["backbone=toy", f"task={task}", f"backbone.pretrained={out / task}", f"data.shards={listed(train)}",
             f"task.grid_shards={listed(heldout)}"]
    if task == "adapter_canny":
        items.append(f"task.adapter.pretrained={out / task}")
    return compose_train_config([*items, *overrides])


def evaluate_teacher(task: str, root: Path, out: Path, settings: TaskBuildSettings, seed: int = 0) -> dict:
    """The teacher at the toy sampling budget (DPM-Solver, CFG 4) on ``eval_count`` held-out conditions:
    PSNR / SSIM against the ground truth and the task's condition metrics."""
    from flash_exp.backbones import build_backbone
    from flash_exp.evaluation.task_runs import evaluate_task
    from flash_exp.tasks import build_task

    cfg = toy_task_config(task, root, out, f"backbone.teacher_sampling.steps={settings.eval_steps}")
    backbone, module = build_backbone(cfg.backbone), build_task(cfg.task)
    result = evaluate_task(backbone, module, cfg, student_nfe=[], count=settings.eval_count, teacher=True,
                           lpips=None, seed=seed)
    return next(iter(result["samplers"].values()))
