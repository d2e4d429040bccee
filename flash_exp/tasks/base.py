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
        pixels = batch["pixels"]
        latents = backbone.encode_images(pixels)
        cond = backbone.encode_prompts(list(batch["captions"]))
        return PreparedBatch(latents, cond, backbone.null_condition(pixels.shape[0]))
