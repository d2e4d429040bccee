"""Quality gates of the toy world, judged by the toy CLIP.

``python -m flash_exp.toyworld.quality [--root DIR] [--clip-count N] [--teacher-count N]`` prints

* the toy CLIP's zero-shot accuracy on held-out real images (target >= 0.95), and
* the same accuracy on teacher samples at its full sampling budget (target >= 0.8),

where an image counts as correct when the argmax over all possible captions names its shape and
colour (the background is not scored).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
import webdataset as wds
from diffusers import StableDiffusionPipeline
from PIL import Image

from flash_exp.config import toy_paths
from flash_exp.metrics.toy_clip import load_toy_clip
from flash_exp.toyworld.shapes import all_captions, parse_caption
from flash_exp.toyworld.teacher import SamplingBudget

CLIP_THRESHOLD = 0.95
TEACHER_THRESHOLD = 0.8


@dataclass(frozen=True)
class QualityReport:
    """Both accuracies are fractions in [0, 1]; ``seconds`` is the wall time of the measurement."""

    clip_accuracy: float
    teacher_accuracy: float
    seconds: float


class CaptionJudge:
    """Names the caption of an image with the toy CLIP (argmax over :func:`all_captions`)."""

    def __init__(self, clip_dir: Path) -> None:
        self.model, self.preprocess, tokenizer = load_toy_clip(clip_dir)
        self.captions = all_captions()
        with torch.no_grad():
            text = self.model.encode_text(tokenizer(self.captions), normalize=True)
        self.text_features = text  # (C, embed_dim)

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image]) -> list[str]:
        pixels = torch.stack([self.preprocess(image) for image in images])
        features = self.model.encode_image(pixels, normalize=True)
        return [self.captions[i] for i in (features @ self.text_features.t()).argmax(dim=1).tolist()]

    def accuracy(self, images: Sequence[Image.Image], captions: Sequence[str]) -> float:
        """Fraction of ``images`` whose predicted caption has the colour and shape of its caption."""
        predicted = self.predict(images)
        hits = [parse_caption(p)[:2] == parse_caption(c)[:2] for p, c in zip(predicted, captions, strict=True)]
        return sum(hits) / len(hits)


def load_heldout(root: Path, count: int | None = None) -> tuple[list[Image.Image], list[str]]:
    """The first ``count`` (default: all) held-out images, as 32x32 PIL images, with their captions."""
    dataset = wds.WebDataset(toy_paths.heldout_shards(root), shardshuffle=False).decode("pil").to_tuple("jpg", "json")
    images, captions = [], []
    for image, meta in islice(dataset, count):
        images.append(image.convert("RGB"))
        captions.append(meta["caption"])
    return images, captions


def teacher_samples(teacher_dir: Path, prompts: Sequence[str], budget: SamplingBudget, seed: int = 0,
                    batch_size: int = 50) -> list[Image.Image]:
    """Generate one 32x32 image per prompt with the teacher at ``budget`` (seed ``seed + batch``)."""
    pipe = StableDiffusionPipeline.from_pretrained(teacher_dir)
    pipe.set_progress_bar_config(disable=True)
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch_size):
        generator = torch.Generator().manual_seed(seed + start)
        out = pipe(list(prompts[start:start + batch_size]), num_inference_steps=budget.num_inference_steps,
                   guidance_scale=budget.guidance_scale, generator=generator)
        images.extend(out.images)
    return images


def measure(root: Path = toy_paths.ASSETS, clip_count: int | None = None, teacher_count: int = 200,
            seed: int = 0, progress: Callable[[str], None] = print) -> QualityReport:
    """Measure both accuracies on the assets under ``root``."""
    start = time.perf_counter()
    judge = CaptionJudge(toy_paths.clip_dir(root))
    images, captions = load_heldout(root, clip_count)
    clip_accuracy = judge.accuracy(images, captions)
    progress(f"toy CLIP zero-shot accuracy on {len(images)} held-out images: {clip_accuracy:.3f}")

    prompts = random.Random(seed).choices(load_heldout(root)[1], k=teacher_count)
    budget = SamplingBudget(**toy_paths.toyworld_info(root)["teacher_sampling"])
    generated = teacher_samples(toy_paths.teacher_dir(root), prompts, budget, seed=seed)
    teacher_accuracy = judge.accuracy(generated, prompts)
    progress(f"teacher accuracy ({budget.scheduler}, {budget.num_inference_steps} steps, "
             f"CFG {budget.guidance_scale}) on {teacher_count} samples: {teacher_accuracy:.3f}")
    return QualityReport(clip_accuracy, teacher_accuracy, time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=toy_paths.ASSETS, help="toy-world assets directory")
    parser.add_argument("--clip-count", type=int, default=None, help="held-out images to score (default: all)")
    parser.add_argument("--teacher-count", type=int, default=200, help="teacher samples to generate and score")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = measure(args.root, args.clip_count, args.teacher_count, args.seed)
    print(f"wall time: {report.seconds:.1f} s")
    failed = report.clip_accuracy < CLIP_THRESHOLD or report.teacher_accuracy < TEACHER_THRESHOLD
    print(f"thresholds: CLIP >= {CLIP_THRESHOLD}, teacher >= {TEACHER_THRESHOLD}: {'FAIL' if failed else 'PASS'}")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
