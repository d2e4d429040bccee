"""Tasks: text to image and the conditional tasks built on it.

| task | module | data pipeline adds | condition |
|---|---|---|---|
| ``t2i`` | :mod:`.base` | nothing | caption |
| ``inpainting`` | :mod:`.inpainting` | ``mask`` (boxes, strokes) | concat [mask, masked-image latents] |
| ``superres`` | :mod:`.superres` | ``lowres``, ``noise_seed`` | concat low-res image, ``class_labels`` noise level |
| ``adapter_canny`` | :mod:`.adapter` | ``edges`` (torch Canny) | T2I-Adapter residuals |
| ``faceswap`` | :mod:`.faceswap` | ``mask`` (face box), ``reference`` | concat as inpainting + identity tokens |
"""

from __future__ import annotations

import importlib

from flash_exp.config import TASKS, TaskConfig
from flash_exp.tasks.base import PreparedBatch, SampleTransform, Task

# where each task of config.TASKS is implemented (tests/test_layout.py checks the two agree)
TASK_CLASSES = {
    "t2i": ("flash_exp.tasks.base", "Task"),
    "inpainting": ("flash_exp.tasks.inpainting", "InpaintingTask"),
    "superres": ("flash_exp.tasks.superres", "SuperResTask"),
    "adapter_canny": ("flash_exp.tasks.adapter", "AdapterTask"),
    "faceswap": ("flash_exp.tasks.faceswap", "FaceswapTask"),
}


def task_class(name: str) -> type[Task]:
    if name not in TASK_CLASSES:
        raise ValueError(f"task {name!r} has no implementation; known: {', '.join(TASKS)}")
    module, cls = TASK_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def build_task(cfg: TaskConfig) -> Task:
    """The task module (with its frozen models, e.g. the T2I-Adapter or the identity encoder)."""
    return task_class(cfg.name)(cfg)


def build_sample_transform(cfg: TaskConfig, resolution: int) -> SampleTransform | None:
    """The task's per-sample data-pipeline half (no model weights); None for text to image."""
    return task_class(cfg.name).sample_transform(cfg, resolution)


__all__ = ["PreparedBatch", "SampleTransform", "TASK_CLASSES", "Task", "build_sample_transform", "build_task", "task_class"]
