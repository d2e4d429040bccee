"""Tasks: text to image and the conditional tasks built on it."""

from __future__ import annotations

from flash_exp.config import TaskConfig
from flash_exp.tasks.base import PreparedBatch, Task


def build_task(cfg: TaskConfig) -> Task:
    if cfg.name == "t2i":
        return Task()
    raise ValueError(f"task {cfg.name!r} has no implementation in this build")


__all__ = ["PreparedBatch", "Task", "build_task"]
