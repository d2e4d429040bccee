"""Held-out conditions of a conditional task: the fixed batch a sample grid shows and an evaluation scores.

The first samples of ``task.grid_shards`` (or the training shards), in file order, with the task's
inputs (masks, degradations, edge maps) drawn from generators seeded by a seed and each sample's
position, so the same conditions come back in every process.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import torch

from flash_exp.config import TrainConfig
from flash_exp.data.webdataset import CaptionedImageStream
from flash_exp.tasks import build_sample_transform


def held_out_conditions(cfg: TrainConfig, count: int, seed: int | None = None,
                        allow_command_urls: bool = False) -> dict[str, Any]:
    """A batch of the first ``count`` usable samples of ``task.grid_shards`` (or the training shards),
    in file order, each once (fewer when the shards hold fewer), with the task's inputs (masks,
    degradations, edge maps) drawn from generators seeded by ``seed`` (default ``cfg.seed``) and the
    sample's position. Keys: those of a training batch plus ``key`` (the samples' ``__key__``).
    ``pipe:`` shard URLs are refused unless ``allow_command_urls``: an evaluation never runs the
    commands of a saved config."""
    shards = list(cfg.task.grid_shards) or list(cfg.data.shards)
    stream = CaptionedImageStream(
        shards=shards, resolution=cfg.backbone.resolution, batch_size=count, seed=cfg.seed if seed is None else seed,
        image_keys=cfg.data.image_key, caption_key=cfg.data.caption_key, crop_size=cfg.data.crop_size,
        transform=build_sample_transform(cfg.task, cfg.backbone.resolution), allow_command_urls=allow_command_urls,
    )
    items = list(islice(stream.one_pass(), count))
    if not items:
        raise FileNotFoundError(f"no usable held-out sample in {shards[:3]} (task.grid_shards / data.shards)")
    return stream.collate(items)


def grid_conditions(cfg: TrainConfig, count: int | None = None, allow_command_urls: bool = False) -> dict[str, Any]:
    """The conditions a sample grid shows: :func:`held_out_conditions` of ``task.num_grid_samples``."""
    return held_out_conditions(cfg, count or cfg.task.num_grid_samples, allow_command_urls=allow_command_urls)


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The batch with its tensors on ``device`` (other values as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


__all__ = ["grid_conditions", "held_out_conditions", "to_device"]
