"""Sample grids: the student at each NFE beside the teacher at its own budget, same prompts and seeds.

Text to image samples through the backbone's diffusers pipeline. A conditional task samples through
:func:`sample_conditional` (the backbone interface and the family's own schedulers) with the very
conditions ``task.prepare`` builds for training, and its grid shows the condition images above the
samples (masked input, low-res input, edge map, reference) and the ground truth below them.

:func:`sample_and_score` (each sampler setting on one batch of conditions, then the task's scores) is
the one loop the grids, the task-run evaluation and the toy teachers' evaluation share.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torchvision.utils import save_image

from flash_exp.backbones.base import Backbone
from flash_exp.config import TeacherSamplingConfig
from flash_exp.metrics.restoration import restoration_metrics
from flash_exp.metrics.spec import SamplerSetting
from flash_exp.tasks.base import PreparedBatch, Task
from flash_exp.training.conditions import grid_conditions, to_device
from flash_exp.training.sharding import is_fsdp


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


@torch.no_grad()
def sample_conditional(backbone: Backbone, cond, null, latent_shape: tuple[int, ...], student: bool, steps: int,
                       guidance: float, seed: int, noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Images (B, 3, R, R) in [0, 1] sampled with ``cond`` (and ``null`` for CFG when ``guidance > 1``).

    The student uses its few-step scheduler without CFG (LoRA on); the teacher its sampling scheduler
    (LoRA off). Sample i starts from noise seeded ``noise_seeds[i]``, by default ``seed + i`` as
    :func:`sample_images`; ``seed`` also seeds a stochastic scheduler's steps.
    """
    from flash_exp.method.distiller import guided_output

    device = next(backbone.denoiser.parameters()).device
    sched = backbone.make_scheduler("student" if student else "teacher_sampling")
    sched.set_timesteps(steps, device=device)
    b = latent_shape[0]
    seeds = list(noise_seeds) if noise_seeds is not None else [seed + i for i in range(b)]
    x = torch.stack([torch.randn(latent_shape[1:], generator=torch.Generator().manual_seed(s))
                     for s in seeds]).to(device)
    x = x * getattr(sched, "init_noise_sigma", 1.0)
    generator = torch.Generator().manual_seed(seed)
    with backbone.adapter(student):
        for t in sched.timesteps:
            model_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            tt = t.reshape(1).expand(b).to(device)
            if not student and guidance > 1.0:
                out = guided_output(backbone, model_in, tt, cond, null, guidance)
            else:
                out = backbone.denoise(model_in, tt, cond)
            step_kw = {"generator": generator} if "generator" in _step_params(sched) else {}
            x = sched.step(out, t, x, return_dict=False, **step_kw)[0]
    images = (backbone.decode_latents(x).float().clamp(-1, 1) + 1) / 2
    return images.cpu()


def _step_params(sched) -> set[str]:
    import inspect

    return set(inspect.signature(sched.step).parameters)


def task_settings(nfe: list[int], teacher_sampling: TeacherSamplingConfig) -> list[SamplerSetting]:
    """The student at each NFE without CFG, then the teacher at its sampling budget with its CFG."""
    ts = teacher_sampling
    return [SamplerSetting("student", n, 0.0) for n in nfe] + [SamplerSetting("teacher", ts.steps, ts.guidance)]


@torch.no_grad()
def sample_task(backbone: Backbone, task: Task, batch: dict, setting: SamplerSetting, seed: int,
                prepared: PreparedBatch | None = None, noise_seeds: Sequence[int] | None = None) -> torch.Tensor:
    """Outputs (B, 3, R, R) in [0, 1] for the conditions of ``batch`` (``prepared``: its
    ``task.prepare``, computed here when not given), sampled by :func:`sample_conditional`."""
    prepared = prepared if prepared is not None else task.prepare(batch, backbone)
    return sample_conditional(backbone, prepared.condition, prepared.null_condition, tuple(prepared.latents.shape),
                              setting.sampler == "student", setting.nfe, setting.guidance, seed, noise_seeds)


def score_samples(task: Task, images: torch.Tensor, batch: dict, truth: torch.Tensor | None,
                  lpips: torch.nn.Module | None = None) -> dict:
    """The task's condition metrics of ``images`` ((B, 3, R, R) in [0, 1]), then PSNR / SSIM / LPIPS
    (``lpips``: a built network, or None for ``lpips: None``) against ``truth`` ([-1, 1]) when there is one."""
    scores = task.condition_metrics(images, to_device(batch, "cpu"))
    if truth is not None:
        scores.update(restoration_metrics(images, (truth.float().cpu() + 1) / 2, lpips=lpips))
    return scores


def sample_and_score(backbone: Backbone, task: Task, batch: dict, settings: list[SamplerSetting], seed: int,
                     lpips: torch.nn.Module | None = None, noise_seeds: Sequence[int] | None = None
                     ) -> list[tuple[SamplerSetting, torch.Tensor, dict]]:
    """For each sampler setting, in order: the outputs for the conditions of ``batch`` (prepared once;
    sample i starts from noise seeded ``noise_seeds[i]``, by default ``seed + i``) and their
    :func:`score_samples`."""
    prepared = task.prepare(batch, backbone)
    truth = task.ground_truth(batch)
    out = []
    for setting in settings:
        images = sample_task(backbone, task, batch, setting, seed, prepared, noise_seeds)
        out.append((setting, images, score_samples(task, images, batch, truth, lpips)))
    return out


def write_task_grid(backbone: Backbone, task: Task, batch: dict, nfe: list[int], path: Path, seed: int = 0) -> dict:
    """A conditional task's grid, one column per condition: condition rows, the student at each NFE
    (no CFG), the teacher at its budget (CFG), then the ground truth when there is one. Writes the
    scores of each sampler row (``task.condition_metrics`` and PSNR / SSIM against the ground truth)
    to ``<path>.json``."""
    import json

    device = next(backbone.denoiser.parameters()).device
    batch = to_device(task.grid_batch(batch), device)
    rows, labels, scores = [], [], {}
    for label, images in task.grid_inputs(batch):
        rows.append(((images.float().cpu().clamp(-1, 1)) + 1) / 2)
        labels.append(label)
    truth = task.ground_truth(batch)
    ts = backbone.cfg.teacher_sampling
    for setting, images, row in sample_and_score(backbone, task, batch, task_settings(nfe, ts), seed):
        student = setting.sampler == "student"
        label = f"student {setting.nfe} NFE" if student else f"teacher {ts.steps} steps, CFG {ts.guidance}"
        rows.append(images)
        labels.append(label)
        scores[label] = {k: round(v, 4) for k, v in row.items() if k != "lpips"}
    columns = rows[-1].shape[0]
    if truth is not None:
        rows.append((truth.float().cpu().clamp(-1, 1) + 1) / 2)
        labels.append("ground truth")
    save_grid(torch.cat(rows), path, columns)
    captions = list(batch["captions"])
    path.with_suffix(".txt").write_text(
        f"task: {task.name}\nrows: " + " | ".join(labels) + "\ncolumns: " + " | ".join(captions)
        + f"\nseeds: {seed}..{seed + columns - 1}\n"
    )
    path.with_suffix(".json").write_text(json.dumps({"task": task.name, "rows": labels, "captions": captions,
                                                     "scores": scores}, indent=2) + "\n")
    return {"rows": labels, "prompts": captions, "scores": scores}


def save_grid(images: torch.Tensor, path: Path, columns: int) -> None:
    """Save (N, 3, R, R) images in [0, 1] as a PNG grid of ``columns`` columns, enlarged by
    :func:`viewing_scale`."""
    scale = viewing_scale(images.shape[-1])
    if scale > 1:
        images = torch.nn.functional.interpolate(images, scale_factor=scale, mode="nearest")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images, path, nrow=columns, padding=2, pad_value=1.0)


def write_grid(backbone: Backbone, prompts: list[str], nfe: list[int], path: Path, seed: int = 0) -> dict:
    """One row per sampler (student at each NFE without CFG, then the teacher's full budget with CFG).

    Images smaller than 128 px (the toy world's 32 px) are enlarged by an integer factor."""
    cfg = backbone.cfg
    rows, labels = [], []
    for n in nfe:
        rows.append(sample_images(backbone, prompts, True, n, cfg.student_guidance, seed, cfg.resolution))
        labels.append(f"student {n} NFE")
    ts = cfg.teacher_sampling
    rows.append(sample_images(backbone, prompts, False, ts.steps, ts.guidance, seed, cfg.resolution))
    labels.append(f"teacher {ts.steps} steps, CFG {ts.guidance}")
    save_grid(torch.cat(rows), path, len(prompts))
    path.with_suffix(".txt").write_text(
        "rows: " + " | ".join(labels) + "\ncolumns: " + " | ".join(prompts) + f"\nseeds: {seed}..{seed + len(prompts) - 1}\n"
    )
    return {"rows": labels, "prompts": prompts}


class SampleGridCallback(L.Callback):
    """Writes ``samples/step_XXXXXX.png`` every ``every`` steps and at the end of training.

    For a conditional task the columns are the first ``task.num_grid_samples`` samples of
    ``task.grid_shards`` (or the training shards) with their task inputs, fixed for the whole run.
    """

    def __init__(self, directory: Path, prompts: list[str], nfe: list[int], every: int, seed: int,
                 to_trackers: bool = False):
        self.directory, self.prompts, self.nfe, self.every, self.seed = directory, prompts, nfe, every, seed
        self.to_trackers = to_trackers  # also send each grid to the trainer's loggers that take images
        self._task_batch: dict | None = None
        self._said_fsdp = False

    @rank_zero_only
    def _write(self, pl_module: L.LightningModule, step: int) -> None:
        path = self.directory / f"step_{step:06d}.png"
        self._draw(pl_module, path)
        if self.to_trackers:
            from flash_exp.training.loggers import log_grid

            log_grid(pl_module.loggers, path, step)

    def _draw(self, pl_module: L.LightningModule, path: Path) -> None:
        backbone, task = pl_module.backbone, getattr(pl_module, "task", None)
        with backbone.frozen_on_device():
            if task is not None and task.name != "t2i":
                if self._task_batch is None:
                    self._task_batch = grid_conditions(pl_module.cfg,
                                                       allow_command_urls=pl_module.cfg.data.allow_command_urls)
                write_task_grid(backbone, task, self._task_batch, self.nfe, path, self.seed)
            else:
                write_grid(backbone, self.prompts, self.nfe, path, self.seed)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every > 0 and step % self.every == 0 and step > 0 and self._drawable(trainer):
            self._write(pl_module, step)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._drawable(trainer):
            self._write(pl_module, trainer.global_step)

    def _drawable(self, trainer) -> bool:
        """False under FSDP: no rank holds the whole denoiser, which one rank's pipeline would need.
        The export samples as usual (``python -m flash_exp.sample``, ``make eval``)."""
        if not is_fsdp(trainer):
            return True
        if not self._said_fsdp:
            rank_zero_info("sample grids are not drawn under trainer.strategy=fsdp (no rank holds the whole "
                           "denoiser); sample the export with python -m flash_exp.sample")
            self._said_fsdp = True
        return False
