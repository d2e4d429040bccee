"""The bench's three sections: the training step, sampling, and the evaluation's feature extraction."""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import torch

from flash_exp.bench.naive import (
    SecondRolloutStep,
    cfg_as_two_calls,
    classic_attention,
    no_grad_instead_of_inference_mode,
)
from flash_exp.bench.reference import BATCH, K, modes_overrides, reference_config
from flash_exp.bench.steps import StepRunner, Timing, time_steps
from flash_exp.method import build_distiller


def bench_training(pretrained: Path, device: torch.device, batches: int, warmup: int) -> list[Timing]:
    """Seconds, denoiser calls and peak memory per data batch: per start index, then the naive variants,
    the warm-up phase and gradient checkpointing (start index 0)."""
    from flash_exp.backbones import build_backbone

    phase3 = 3  # the step lies in phase 3 when every phase is 1 iteration long
    rows = []
    base = reference_config(pretrained, "phases.iterations=[1,1,1,1]")
    backbone = build_backbone(base.backbone).to(device)
    for index in (0, 1, 2, 3, None):
        cfg = reference_config(pretrained, "phases.iterations=[1,1,1,1]", *modes_overrides(index))
        runner = StepRunner(build_distiller(backbone, cfg).to(device), device)
        label = f"start index {index * K // 4} (t={runner.d.teacher_timesteps(K)[index * K // 4].item()})" \
            if index is not None else "start index drawn (phase 3 mixture)"
        rows.append(time_steps(label, runner, backbone, phase3, batches, warmup, device))

    fixed0 = reference_config(pretrained, "phases.iterations=[1,1,1,1]", *modes_overrides(0))
    before = [
        ("before: second teacher rollout for the discriminator", lambda: contextlib.nullcontext(), SecondRolloutStep),
        ("before: CFG as two calls", cfg_as_two_calls, StepRunner),
        ("before: no_grad instead of inference_mode", no_grad_instead_of_inference_mode, StepRunner),
        ("before: classic attention instead of SDPA", lambda: classic_attention(backbone), StepRunner),
    ]
    for label, context, step_kind in before:
        with context():
            runner = step_kind(build_distiller(backbone, fixed0).to(device), device)
            rows.append(time_steps(f"{label} (index 0)", runner, backbone, phase3, batches, warmup, device))
    runner = StepRunner(build_distiller(backbone, fixed0).to(device), device)
    rows.append(time_steps("warm-up phase: zero-weight GAN/DMD skipped (index 0)", runner, backbone, 0,
                           batches, warmup, device))
    ckpt = reference_config(pretrained, "phases.iterations=[1,1,1,1]", "backbone.gradient_checkpointing=true",
                            *modes_overrides(0))
    backbone_ckpt = build_backbone(ckpt.backbone).to(device)
    runner = StepRunner(build_distiller(backbone_ckpt, ckpt).to(device), device)
    rows.append(time_steps("gradient checkpointing on (index 0)", runner, backbone_ckpt, phase3, batches,
                           warmup, device))
    return rows


def bench_sampling(pretrained: Path, device: torch.device, repeats: int) -> list[dict]:
    """Images per second of the student at 1, 2 and 4 NFE and of the teacher's full sampling budget."""
    from flash_exp.backbones import build_backbone
    from flash_exp.training.samples import sample_images

    cfg = reference_config(pretrained)
    backbone = build_backbone(cfg.backbone).to(device)
    prompts = ["a red circle on a black background"] * BATCH
    rows = []
    runs = [("student", True, n, 0.0) for n in (1, 2, 4)]
    runs.append(("teacher", False, cfg.backbone.teacher_sampling.steps, cfg.backbone.teacher_sampling.guidance))
    for who, student, steps, guidance in runs:
        sample_images(backbone, prompts, student, steps, guidance, 0, 32)  # warm-up
        start = time.perf_counter()
        for r in range(repeats):
            sample_images(backbone, prompts, student, steps, guidance, r, 32)
        seconds = time.perf_counter() - start
        rows.append({"sampler": f"{who} {steps} NFE" + (f", CFG {guidance}" if guidance else ""),
                     "images_per_s": repeats * BATCH / seconds})
    return rows


def bench_evaluation(repeats: int, count: int = 64) -> list[dict]:
    """Images per second of the toy benchmark's FID feature extraction and CLIP scoring, through the
    evaluation's own code path (PNG files decoded, cropped and resized) on ``count`` held-out images."""
    from flash_exp.config import toy_paths
    from flash_exp.metrics.clip_score import clip_scores, toy_clip_model
    from flash_exp.metrics.features import clip_image_extractor
    from flash_exp.metrics.fid import image_features
    from flash_exp.toyworld.quality import load_heldout

    clip = toy_clip_model()
    extractor = clip_image_extractor(clip)
    images, captions = load_heldout(toy_paths.ASSETS, count)
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / f"{i:05d}.png" for i in range(len(images))]
        for image, path in zip(images, files, strict=True):
            image.save(path)
        stages = {
            "toy FID features (toy CLIP image tower)": lambda: image_features(files, extractor, eval_res=32),
            "toy CLIP score (image + text towers)": lambda: clip_scores(files, captions, clip, eval_res=32),
        }
        rows = []
        for stage, run in stages.items():
            run()  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            rows.append({"stage": stage, "images_per_s": repeats * len(files) / (time.perf_counter() - start)})
    return rows
