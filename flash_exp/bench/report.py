"""The bench's Markdown report (``docs/benchmarks.md``)."""

from __future__ import annotations

import platform

import torch

from flash_exp.bench.reference import BATCH, K
from flash_exp.bench.steps import Timing


def render(device_name: str, training: list[Timing], sampling: list[dict], evaluation: list[dict],
           batches: int, warmup: int) -> str:
    """The report: the training-step table, the sampling table and (when measured) the evaluation table."""
    lines = [
        "# Benchmarks",
        "",
        f"`python -m flash_exp.bench` on {device_name}; torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads. Reference model: SD1.5-shaped UNet (32, 64, 64), cross-attention 64, VAE factor 2, "
        f"32x32 images, batch {BATCH}, K = {K}, phase 3 (all losses on), l2 distillation. "
        f"Median and min over {batches} batches after {warmup} warm-up batches.",
        "",
        "## Training step (one data batch: generator + discriminator update)",
        "",
        "| configuration | median s/batch | min s/batch | teacher evals (batch B) | student evals | peak MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in training:
        lines.append(f"| {r.label} | {r.median_s:.3f} | {r.min_s:.3f} | {r.teacher_evals:.0f} | "
                     f"{r.student_evals:.0f} | {r.peak_mb:.0f} |")
    lines += ["", "## Sampling", "", "| sampler | images/s |", "|---|---:|"]
    lines += [f"| {r['sampler']} | {r['images_per_s']:.1f} |" for r in sampling]
    if evaluation:
        lines += ["", "## Evaluation", "", "| stage | images/s |", "|---|---:|"]
        lines += [f"| {r['stage']} | {r['images_per_s']:.1f} |" for r in evaluation]
    return "\n".join(lines) + "\n"


def device_description(device: torch.device) -> str:
    """The GPU's name, or the CPU's and its thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
