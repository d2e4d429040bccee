"""Sample grids: the student at each NFE beside the teacher at its own budget, same prompts and seeds."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import save_image

from flash_exp.backbones.base import Backbone


@torch.no_grad()
def sample_images(backbone: Backbone, prompts: list[str], student: bool, steps: int, guidance: float,
                  seed: int, resolution: int) -> torch.Tensor:
    """Images (N, 3, R, R) in [0, 1]; image i uses the generator seeded ``seed + i``."""
    pipe = backbone.pipeline(student=student)
    generators = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(len(prompts))]
    with backbone.adapter(student):
        out = pipe(prompt=prompts, num_inference_steps=steps, guidance_scale=guidance,
                   generator=generators, height=resolution, width=resolution, output_type="pt").images
    return out.to(device="cpu", dtype=torch.float32)


def viewing_scale(side: int, min_side: int = 128) -> int:
    """Integer factor that brings images of ``side`` pixels to at least ``min_side`` in a grid
    (nearest-neighbour, so the pixels the model drew stay visible); 1 for images that large."""
    return max(1, -(-min_side // side))


def write_grid(backbone: Backbone, prompts: list[str], nfe: list[int], path: Path, seed: int = 0) -> dict:
    """One row per sampler (student at each NFE without CFG, then the teacher's full budget with CFG).

    Images smaller than 128 px (the toy world's 32 px) are enlarged by an integer factor."""
    cfg = backbone.cfg
    rows, labels = [], []
    for n in nfe:
        rows.append(sample_images(backbone, prompts, True, n, 0.0, seed, cfg.resolution))
        labels.append(f"student {n} NFE")
    ts = cfg.teacher_sampling
    rows.append(sample_images(backbone, prompts, False, ts.steps, ts.guidance, seed, cfg.resolution))
    labels.append(f"teacher {ts.steps} steps, CFG {ts.guidance}")
    path.parent.mkdir(parents=True, exist_ok=True)
    images = torch.cat(rows)
    scale = viewing_scale(images.shape[-1])
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    save_image(images, path, nrow=len(prompts), padding=2, pad_value=1.0)
    path.with_suffix(".txt").write_text(
        "rows: " + " | ".join(labels) + "\ncolumns: " + " | ".join(prompts) + f"\nseeds: {seed}..{seed + len(prompts) - 1}\n"
    )
    return {"rows": labels, "prompts": prompts}


class SampleGridCallback(L.Callback):
    """Writes ``samples/step_XXXXXX.png`` every ``every`` steps and at the end of training."""

    def __init__(self, directory: Path, prompts: list[str], nfe: list[int], every: int, seed: int):
        self.directory, self.prompts, self.nfe, self.every, self.seed = directory, prompts, nfe, every, seed

    @rank_zero_only
    def _write(self, pl_module: L.LightningModule, step: int) -> None:
        backbone = pl_module.backbone
        with backbone.frozen_on_device():
            write_grid(backbone, self.prompts, self.nfe, self.directory / f"step_{step:06d}.png", self.seed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step > 0:
            self._write(pl_module, step)

    def on_train_end(self, trainer, pl_module) -> None:
        self._write(pl_module, trainer.global_step)
