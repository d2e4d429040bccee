"""Seeded, batched, resumable sampling of a prompt set to PNG files.

Image ``i`` is ``<dir>/<i:06d>.png``, generated from ``prompts[i]`` with a CPU ``torch.Generator``
seeded ``noise_seeds[i]`` (the same initial noise on every device; the evaluation's seeds follow
:func:`flash_exp.metrics.noise.image_noise_seed`). Batches are the aligned chunks
``[k * batch_size, (k + 1) * batch_size)`` and only missing images are generated, so a rerun after
an interruption makes exactly the missing files, in the same batches as an uninterrupted run and
hence with the same pixels (only a chunk cut in the middle of its writes is finished in a smaller
batch). Each PNG is written under a temporary name and renamed, so a killed run leaves no
half-written PNG; leftover temporary files are removed on the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from flash_exp.metrics.images import image_path, write_png_atomic
from flash_exp.metrics.spec import SamplerSetting


@dataclass
class GenerationReport:
    """``files``: one PNG per prompt, in prompt order; ``generated``: how many this call made;
    ``seconds``: wall time of this call's sampling."""

    files: list[Path]
    generated: int
    seconds: float


def generate_images(pipeline: Callable[[], Any], prompts: Sequence[str], directory: Path,
                    setting: SamplerSetting, noise_seeds: Sequence[int], resolution: int, batch_size: int,
                    description: str = "") -> GenerationReport:
    """Make every missing ``<directory>/<i>.png``; ``pipeline()`` builds the diffusers pipeline and is
    called only when something is missing. Images are ``resolution`` x ``resolution`` RGB."""
    if len(noise_seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts need as many noise seeds, got {len(noise_seeds)}")
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".*.tmp"):
        stale.unlink()
    files = [image_path(directory, i) for i in range(len(prompts))]
    missing = {i for i, f in enumerate(files) if not f.is_file()}
    if not missing:
        return GenerationReport(files, 0, 0.0)
    pipe = pipeline()
    start = time.perf_counter()
    with tqdm(total=len(missing), desc=description or setting.name, unit="img", dynamic_ncols=True) as bar:
        for chunk in range(0, len(prompts), batch_size):
            todo = [i for i in range(chunk, min(chunk + batch_size, len(prompts))) if i in missing]
            if not todo:
                continue
            images = pipe(
                prompt=[prompts[i] for i in todo],
                num_inference_steps=setting.nfe,
                guidance_scale=setting.guidance,
                generator=[torch.Generator().manual_seed(noise_seeds[i]) for i in todo],
                height=resolution,
                width=resolution,
                output_type="pil",
            ).images
            for i, image in zip(todo, images, strict=True):
                write_png_atomic(image, files[i])
            bar.update(len(todo))
    return GenerationReport(files, len(missing), time.perf_counter() - start)
