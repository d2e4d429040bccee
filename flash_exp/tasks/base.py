"""What a task adds to a batch and to the condition. A task never knows which backbone it runs on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition


@dataclass
class PreparedBatch:
    """A batch ready for the distiller: clean latents (B, C, h, w) and the conditions of both CFG branches."""

    latents: torch.Tensor
    condition: Condition
    null_condition: Condition


class Task:
    """Text to image: the caption is the whole condition; subclasses add channels or residuals."""

    name = "t2i"

    def prepare(self, batch: dict, backbone: Backbone) -> PreparedBatch:
        """Encode ``pixels`` and ``captions`` (offloaded encoders visit the compute device meanwhile), or
        take ``latents`` and ``condition`` from a cached batch (the encoders stay where they are)."""
        if "latents" in batch:
            latents = batch["latents"]
            null = backbone.null_condition(latents.shape[0]).to(latents.device)
            return PreparedBatch(latents, Condition(kwargs=batch["condition"]), null)
        with backbone.frozen_on_device():
            latents = backbone.encode_images(batch["pixels"])
            cond = backbone.encode_prompts(list(batch["captions"]))
            return PreparedBatch(latents, cond, backbone.null_condition(latents.shape[0]))
