"""The distillation methods: Flash (the paper), LCM and DMD2, behind one training-step interface.

A distiller has ``optimizer_groups()`` -> [(parameters, lr, clip gradients)] (the first optimiser steps
once per data batch) and ``train_step(z, cond, null, step, generator, update) -> logs``, where
``update(index, loss, logs)`` back-propagates ``loss`` and steps optimiser ``index`` (``logs``: the
loss terms, named in the error when the loss is not finite).
"""

from __future__ import annotations

from torch import nn


def build_distiller(backbone, cfg, lpips: nn.Module | None = None) -> nn.Module:
    """The distiller of ``cfg.method.name`` on ``backbone``."""
    name = cfg.method.name
    if name == "lcm":
        from flash_exp.method.lcm import LCMDistiller

        return LCMDistiller(backbone, cfg)
    if name == "dmd2":
        from flash_exp.method.dmd2 import DMD2Distiller

        return DMD2Distiller(backbone, cfg)
    from flash_exp.method.distiller import FlashDistiller

    return FlashDistiller(backbone, cfg, lpips)
