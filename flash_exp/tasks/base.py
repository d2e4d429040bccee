"""What a task adds to a batch and to the condition. A task never knows which backbone it runs on.

A task has two halves:

- a :class:`SampleTransform`, run per sample in the data pipeline (DataLoader workers): it reads the
  task's fields from the raw webdataset sample (``read``, cheap, may reject a sample) and draws the
  task's random inputs (masks, degradations, edge maps) from a generator seeded by the sample's
  position in its stream, so a resumed run sees exactly the inputs an uninterrupted run would;
- the :class:`Task` module, run on the training device: ``prepare`` turns the batch into clean
  latents and the conditions of both CFG branches, through the backbone's interface only
  (``encode_images``, ``encode_prompts``, ``null_condition``, ``add_*``). Teacher and student, the
  GAN features and DMD all receive the same :class:`~flash_exp.backbones.condition.Condition`; the
  null condition carries the same task inputs (concat channels, residuals, class labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import TaskConfig


@dataclass
class PreparedBatch:
    """A batch ready for the distiller: clean latents (B, C, h, w) and the conditions of both CFG branches."""

    latents: torch.Tensor
    condition: Condition
    null_condition: Condition


class SampleTransform:
    """Per-sample task inputs computed in the data pipeline (picklable; no model weights).

    ``read(sample, meta)`` gets the raw webdataset sample (bytes per key) and its parsed json; it
    returns the fields to keep (may be empty) or None when the sample cannot serve this task (it is
    then skipped and counted). ``__call__(item, generator)`` gets ``{pixels (3, R, R) in [-1, 1],
    caption, **read fields}`` and returns it with the task's tensors added; it runs only for samples
    that reach a batch. Every tensor it adds is stacked into the batch under the same key.
    """

    def read(self, sample: dict, meta: dict) -> dict | None:
        return {}

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        return item


def check_concat_channels(task: str, backbone: Backbone, channels: int, what: str) -> None:
    """A clear error when the teacher's denoiser does not take the channels this task concatenates."""
    expected = backbone.extra_input_channels()
    if expected != channels:
        raise ValueError(
            f"task={task} concatenates {channels} channels ({what}) to the latents, but the teacher's "
            f"denoiser takes {expected} extra input channels: is backbone.pretrained "
            f"({backbone.cfg.pretrained}) a {task} checkpoint?"
        )


class Task(nn.Module):
    """Text to image: the caption is the whole condition; subclasses add channels, tokens or residuals.

    A subclass that holds frozen models (adapter, image encoder) registers them as submodules, so they
    move with the LightningModule; frozen weights are never checkpointed (only trainable ones are).
    """

    name = "t2i"
    has_ground_truth = False  # the batch image is the answer (restoration): PSNR / SSIM / LPIPS apply

    def __init__(self, cfg: TaskConfig | None = None):
        super().__init__()
        self.cfg = cfg if cfg is not None else TaskConfig()

    @staticmethod
    def sample_transform(cfg: TaskConfig, resolution: int) -> SampleTransform | None:
        """The data-pipeline half of the task (None: nothing per sample)."""
        return None

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
            null = backbone.null_condition(latents.shape[0])
            cond, null = self.add_condition(batch, backbone, latents, cond, null)
        return PreparedBatch(latents, cond, null)

    def add_condition(self, batch: dict, backbone: Backbone, latents: torch.Tensor, cond: Condition,
                      null: Condition) -> tuple[Condition, Condition]:
        """The task's inputs added to the conditions of both CFG branches (text to image: none).
        ``latents`` (B, C, h, w) are the batch's clean latents; runs with the frozen encoders on device."""
        return cond, null

    # ------------------------------------------------------------------ sample grids and metrics
    def grid_batch(self, batch: dict) -> dict:
        """The batch the sample grid shows (face swapping exchanges the references)."""
        return batch

    def grid_inputs(self, batch: dict) -> list[tuple[str, torch.Tensor]]:
        """Rows of condition images shown above the samples: (label, (B, 3, R, R) in [-1, 1])."""
        return []

    def ground_truth(self, batch: dict) -> torch.Tensor | None:
        """The image the outputs are scored against ((B, 3, R, R) in [-1, 1]), or None."""
        return batch["pixels"] if self.has_ground_truth else None

    def condition_metrics(self, images: torch.Tensor, batch: dict) -> dict[str, float]:
        """How well outputs ((B, 3, R, R) in [0, 1]) follow the condition, beyond the ground truth."""
        return {}


def per_sample_noise(seeds: torch.Tensor, shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
    """(B, *shape) standard normal noise, sample i drawn from a generator seeded by ``seeds[i]``."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds.tolist()]
    return torch.stack(rows).to(device=device, dtype=dtype)


__all__ = ["PreparedBatch", "SampleTransform", "Task", "check_concat_channels", "per_sample_noise"]
