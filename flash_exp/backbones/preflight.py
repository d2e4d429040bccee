"""Checks of a config against the teacher's own config files, before any weight loads.

A diffusers pipeline directory describes its models in small JSON files (``vae/config.json``,
``unet/config.json`` or ``transformer/config.json``, ``scheduler/scheduler_config.json``). From them:

- ``backbone.resolution`` must be a multiple of the VAE's downsampling factor times the denoiser's
  (a UNet's downsamplers, a transformer's patch size), and of 8 where the diffusers pipeline of the
  family insists on it; otherwise training runs and the first sample grid fails;
- every ``phases.k`` must be at most the training schedule's ``num_train_timesteps``: more teacher
  steps than training timesteps repeat timesteps and train on NaN;
- the scheduler names must be diffusers scheduler classes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from flash_exp.config import ConfigError, TrainConfig

PIPELINE_MULTIPLE = {"sd": 8, "sdxl": 8, "pixart": 8, "sd3": 1}  # the pipelines' own height/width check


def _config(directory: Path, *names: str) -> dict[str, Any] | None:
    """The first of ``directory/<name>`` that exists, parsed; None when none does."""
    for name in names:
        path = directory / name
        if path.is_file():
            return json.loads(path.read_text())
    return None


def resolution_multiple(family: str, directory: Path) -> int | None:
    """What ``backbone.resolution`` must be a multiple of, from the pipeline's config files (None when
    they are not there to read)."""
    vae = _config(directory, "vae/config.json")
    denoiser = _config(directory, "unet/config.json", "transformer/config.json")
    if vae is None or denoiser is None:
        return None
    vae_factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    if "patch_size" in denoiser and denoiser["patch_size"]:
        denoiser_factor = int(denoiser["patch_size"])
    else:  # a UNet downsamples once per block but the last
        denoiser_factor = 2 ** (len(denoiser.get("block_out_channels", [0])) - 1)
    return math.lcm(vae_factor * denoiser_factor, PIPELINE_MULTIPLE.get(family, 1))


def check_resolution(cfg: TrainConfig, directory: Path) -> None:
    multiple = resolution_multiple(cfg.backbone.family, directory)
    if multiple and cfg.backbone.resolution % multiple:
        raise ConfigError("backbone.resolution", cfg.backbone.resolution,
                          f"must be a multiple of {multiple} for {directory} (the VAE's downsampling times the "
                          "denoiser's, and the pipeline's own multiple), e.g. "
                          f"{max(multiple, cfg.backbone.resolution // multiple * multiple)}")


def check_k(cfg: TrainConfig, directory: Path) -> None:
    scheduler = _config(directory, "scheduler/scheduler_config.json") or {}
    steps = cfg.backbone.teacher_scheduler.kwargs.get("num_train_timesteps", scheduler.get("num_train_timesteps"))
    if steps is None:
        return
    for i, k in enumerate(cfg.phases.k):
        if k > int(steps):
            raise ConfigError(f"phases.k[{i}]", k, f"must be <= the training schedule's {steps} timesteps "
                                                   f"(num_train_timesteps of {directory}/scheduler)")


def scheduler_names(cfg: TrainConfig) -> dict[str, str]:
    b = cfg.backbone
    return {"backbone.teacher_scheduler.name": b.teacher_scheduler.name,
            "backbone.student_scheduler.name": b.student_scheduler.name,
            "backbone.teacher_sampling.scheduler.name": b.teacher_sampling.scheduler.name}


def check_scheduler_names(cfg: TrainConfig) -> None:
    import diffusers  # a lazy module: listing its names imports no scheduler

    known = sorted(name for name in dir(diffusers) if name.endswith("Scheduler"))
    for key, name in scheduler_names(cfg).items():
        if name not in known:
            raise ConfigError(key, name, f"not a diffusers scheduler; allowed: {', '.join(known)}")


def check_against_pretrained(cfg: TrainConfig, directory: Path | str) -> None:
    """Every check of this module; raises :class:`ConfigError` naming the key."""
    directory = Path(directory)
    check_resolution(cfg, directory)
    check_k(cfg, directory)
    check_scheduler_names(cfg)
