"""One timed training step of the reference model, and the timing of a run of them."""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from flash_exp.bench.reference import BATCH
from flash_exp.config import OptimConfig
from flash_exp.method.distiller import FlashDistiller


@dataclass
class Timing:
    label: str
    median_s: float
    min_s: float
    teacher_evals: float  # batch-B teacher evaluations per data batch
    student_evals: float
    peak_mb: float


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepRunner:
    """One training step of the distiller as training runs it, :meth:`FlashDistiller.train_step`
    (generator update, then discriminator update), on a fixed batch with plain AdamW updates.

    The batch: ``batch`` latents of shape ``latent_shape`` (C, h, w) drawn once, and the prompts encoded
    once (as a latent cache holds them); ``autocast`` (e.g. bfloat16) runs the step under
    ``torch.autocast``, as Lightning's ``bf16-mixed`` precision does."""

    def __init__(self, distiller: FlashDistiller, device: torch.device, batch: int = BATCH,
                 latent_shape: tuple[int, int, int] = (4, 16, 16), autocast: torch.dtype | None = None,
                 optim: OptimConfig | None = None):
        self.d, self.device, self.autocast = distiller, device, autocast
        b = distiller.backbone
        optim = optim or OptimConfig()
        self.optimizers = [torch.optim.AdamW(params, lr=lr, betas=tuple(optim.betas), weight_decay=optim.weight_decay)
                           for params, lr, _ in distiller.optimizer_groups(optim)]
        g = torch.Generator().manual_seed(0)
        self.z = torch.randn(batch, *latent_shape, generator=g).to(device)
        colours = ("red", "green", "blue", "yellow")
        prompts = [f"a {colours[i % 4]} circle on a black background" for i in range(batch)]
        self.cond = b.encode_prompts(prompts)
        self.null = b.null_condition(batch)
        self.generator = torch.Generator().manual_seed(1)
        self.losses: dict[int, float] = {}  # the last step's loss per optimiser (0: student, 1: discriminator)

    def update(self, index: int, loss: torch.Tensor, logs: dict[str, float]) -> None:
        """Back-propagate ``loss`` into optimiser ``index`` (0: student, 1: discriminator) and step it."""
        self.losses[index] = float(loss.detach())
        opt = self.optimizers[index]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def __call__(self, step: int) -> None:
        context = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                   else contextlib.nullcontext())
        with context:
            self.d.train_step(self.z, self.cond, self.null, step, self.generator, self.update)


def time_steps(label: str, run: Callable[[int], None], backbone, step: int, batches: int, warmup: int,
               device: torch.device, batch: int = BATCH) -> Timing:
    """Run ``run(step)`` ``warmup`` times, then time ``batches`` runs and count the denoiser's calls."""
    for _ in range(warmup):
        run(step)
    backbone.teacher_samples = backbone.student_samples = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(batches):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run(step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    n = batches * batch
    return Timing(label, statistics.median(times), min(times), backbone.teacher_samples / n,
                  backbone.student_samples / n, peak_memory_mb(device))
