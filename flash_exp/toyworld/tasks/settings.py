"""What a toy teacher build does: the stages, step counts and split sizes (full and quick), the toy
canny thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from flash_exp.config import CannyConfig, toy_paths

TASK_STAGES = toy_paths.TOY_TASKS
FACE_SHARD_SIZE = 4000
CANNY = CannyConfig(low_threshold=20.0, high_threshold=60.0, blur_sigma=0.0, detect_resolution=None)
"""The toy canny settings (conf/task_backbone/adapter_canny_toy.yaml): 32 px flat shapes have weak
gradients at OpenCV's 100 / 200, so the toy uses 20 / 60 without blur."""


@dataclass(frozen=True)
class TaskBuildSettings:
    """Steps per teacher (batches of ``batch_size``), face split sizes and the evaluation size."""

    inpainting_steps: int
    superres_steps: int
    adapter_steps: int
    faceswap_steps: int
    batch_size: int
    face_train_count: int
    face_heldout_count: int
    eval_count: int
    eval_steps: int


FULL_TASKS = TaskBuildSettings(inpainting_steps=1500, superres_steps=1200, adapter_steps=1200, faceswap_steps=1500,
                               batch_size=32, face_train_count=6000, face_heldout_count=200, eval_count=32,
                               eval_steps=25)
QUICK_TASKS = TaskBuildSettings(inpainting_steps=2, superres_steps=2, adapter_steps=2, faceswap_steps=2, batch_size=4,
                                face_train_count=16, face_heldout_count=8, eval_count=4, eval_steps=2)
