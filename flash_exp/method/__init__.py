"""The distillation methods: Flash (the paper), LCM and DMD2, behind one training-step interface.

A distiller has ``optimizer_groups(optim)`` -> [(parameters, lr, clip gradients)] (the first optimiser steps
once per data batch) and ``train_step(z, cond, null, step, generator, update) -> logs``, where
``update(index, loss, logs)`` back-propagates ``loss`` and steps optimiser ``index`` (``logs``: the
loss terms, named in the error when the loss is not finite).
"""

from __future__ import annotations

from torch import nn

from flash_exp.config import TrainConfig


def build_distiller(backbone, cfg: TrainConfig, lpips: nn.Module | None = None) -> nn.Module:
    """The distiller of ``cfg.method.name`` on ``backbone``, given the config sections it reads."""
    name = cfg.method.name
    if name == "lcm":
        from flash_exp.method.lcm import LCMDistiller

        return LCMDistiller(backbone, cfg.backbone, cfg.method.lcm_settings())
    if name == "dmd2":
        from flash_exp.method.dmd2 import DMD2Distiller

        return DMD2Distiller(backbone, cfg.backbone, cfg.method.dmd2_settings())
    from flash_exp.method.distiller import FlashDistiller

    return FlashDistiller(backbone, cfg.backbone, cfg.loss, cfg.timesteps, cfg.phases, lpips)
