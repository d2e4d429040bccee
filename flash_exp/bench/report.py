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


FULL_SIZE_HEADING = "## Full-size backbones"
FULL_SIZE_COMMAND = "bash bench/full_size_gpu.sh"


def render_full_size(runs: dict[str, dict]) -> str:
    """The full-size section: per device run (``docs/benchmarks.json``'s ``full_size``), the table
    backbone x preset -> s/batch at start index 0 and at the phase-3 mean, peak memory, 4-NFE images/s,
    then the evaluation's extractors; ``runs`` empty: the section says the figures are pending."""
    lines = [FULL_SIZE_HEADING, "",
             "`python -m flash_exp.bench --full-size`: the paper backbones' real architectures (configs in "
             "`flash_exp/backbones/architectures/`), random weights, trained by the training code path "
             "(`build_backbone` on a pipeline directory, `FlashDistiller.train_step`, LPIPS on a random VGG16): "
             "phase 3 (every loss on) at the paper's K, one data batch of cached latents and text embeddings, "
             "under each memory preset (`conf/trainer/gpu24|gpu40|gpu80`; on a GPU each runs under a memory cap "
             "of its card's size). s/batch: median over the timed batches after the warm-up.", ""]
    if not any(r.get("device_type") == "cuda" for r in runs.values()):
        lines += [f"GPU figures: pending a GPU run (`{FULL_SIZE_COMMAND}`, about 10 minutes on one H100; it "
                  "writes this section and `docs/benchmarks.json`).", ""]
    for device, run in runs.items():
        gpu = run.get("device_type") == "cuda"
        memory = "peak allocated / reserved GB" if gpu else "peak RSS GB"
        lines += [f"### {device}", "", f"`{run['command']}`; torch {run['torch']}, CUDA {run['cuda']}, "
                  f"diffusers {run['diffusers']}; {run['warmup']} warm-up + {run['batches']} timed batches."
                  + (" Timed on a shared, busy machine." if not gpu else ""), "",
                  f"| backbone | preset | px | B | K | s/batch, index 0 | s/batch, phase-3 mean index | {memory} "
                  "| 4-NFE images/s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        notes = {}
        for case in run["cases"]:
            if case.get("note"):
                notes[case["backbone"]] = case["note"]
            if case.get("skipped") and not case["rows"]:
                lines.append(f"| {case['backbone']} | {case['preset']} | {case['resolution'] or '-'} | "
                             f"{case['batch_size'] or '-'} | {case['k'] or '-'} | {case['skipped']} | | | |")
                continue
            by_index = case["rows"]
            first = by_index[0]
            mean = by_index[1] if len(by_index) > 1 else None
            peak = max(by_index, key=lambda r: r.get("peak_allocated_gb", r.get("peak_rss_gb", 0)))
            mem = (f"{peak['peak_allocated_gb']:.1f} / {peak['peak_reserved_gb']:.1f}" if gpu
                   else f"{peak['peak_rss_gb']:.1f}")
            mean_cell = f"{mean['median_s']:.2f} (index {mean['start_index']})" if mean else case.get("skipped", "-")
            sampling = case.get("sampling_images_per_s")
            sampling_cell = f"{sampling:.2f}" if sampling is not None else "-"
            lines.append(f"| {case['backbone']} | {case['preset']} | {case['resolution']} | {case['batch_size']} | "
                         f"{case['k']} | {first['median_s']:.2f} | {mean_cell} | {mem} | {sampling_cell} |")
        lines.append("")
        lines += [f"- {name}: {note}." for name, note in notes.items()]
        if run.get("evaluation"):
            lines += ["", "| evaluation stage (random weights, float32, batch 32) | images/s |", "|---|---:|"]
            lines += [f"| {r['stage']} | {r['images_per_s']:.1f} |" for r in run["evaluation"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def with_full_size_section(report: str, runs: dict[str, dict]) -> str:
    """``report`` with its full-size section (the last one) replaced by, or appended as, the rendering
    of ``runs``; the rest of the report is kept as it is."""
    head = report.split(FULL_SIZE_HEADING)[0].rstrip()
    return (head + "\n\n" if head else "") + render_full_size(runs)


def versions(device: torch.device) -> dict[str, str]:
    """torch, CUDA and diffusers versions, and the device type, as the report states them."""
    import diffusers

    return {"torch": torch.__version__, "cuda": torch.version.cuda or "none", "diffusers": diffusers.__version__,
            "device_type": device.type}
