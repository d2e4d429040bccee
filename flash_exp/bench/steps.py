"""One timed training step of the reference model, and the timing of a run of them."""

from __future__ import annotations

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
    (generator update, then discriminator update), on a fixed batch with plain AdamW updates."""

    def __init__(self, distiller: FlashDistiller, device: torch.device):
        self.d, self.device = distiller, device
        b = distiller.backbone
        self.optimizers = [torch.optim.AdamW(params, lr=1e-5) for params, _, _ in distiller.optimizer_groups(OptimConfig())]
        g = torch.Generator().manual_seed(0)
        self.z = torch.randn(BATCH, 4, 16, 16, generator=g).to(device)
        prompts = [f"a {c} circle on a black background" for c in ("red", "green", "blue", "yellow")]
        self.cond = b.encode_prompts(prompts)
        self.null = b.null_condition(BATCH)
        self.generator = torch.Generator().manual_seed(1)

    def update(self, index: int, loss: torch.Tensor, logs: dict[str, float]) -> None:
        """Back-propagate ``loss`` into optimiser ``index`` (0: student, 1: discriminator) and step it."""
        opt = self.optimizers[index]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def __call__(self, step: int) -> None:
        self.d.train_step(self.z, self.cond, self.null, step, self.generator, self.update)


def time_steps(label: str, run: Callable[[int], None], backbone, step: int, batches: int, warmup: int,
               device: torch.device) -> Timing:
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
    n = batches * BATCH
    return Timing(label, statistics.median(times), min(times), backbone.teacher_samples / n,
                  backbone.student_samples / n, peak_memory_mb(device))
