"""``python -m flash_exp.bench`` (``make bench``): speed and memory of the training step and sampling.

The CPU figures use a fixed reference model so they compare across implementations: an SD1.5-shaped
pipeline with a UNet of block widths (32, 64, 64), one layer per block, cross-attention dim 64,
down blocks (DownBlock2D, CrossAttnDownBlock2D, CrossAttnDownBlock2D), a VAE with downsampling
factor 2, 32x32 images, batch 4, K = 32, the paper's phase 3 (all losses on), l2 distillation.

For each start index of the K-step teacher schedule (the four mixture modes, then drawn from the
phase's distribution) the table gives seconds per data batch (median and min over N batches after
warm-up), the batch-B teacher and student evaluations per batch (counted on the denoiser's calls:
a 2B CFG call counts 2), and peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU).
The "before" rows time the naive variants the step avoids: a second teacher rollout for the
discriminator update, CFG as two calls, ``no_grad`` instead of ``inference_mode``, the classic
attention processor instead of PyTorch SDPA, and the zero-weight losses computed anyway.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

from flash_exp.backbones.condition import Condition
from flash_exp.config import TrainConfig, compose_train_config
from flash_exp.method import build_distiller
from flash_exp.method import distiller as distiller_module
from flash_exp.method.distiller import FlashDistiller

REPO = Path(__file__).resolve().parents[1]
BATCH = 4
K = 32
WORDS = "a red green blue yellow circle square triangle on black white gray background".split()


# ---------------------------------------------------------------------------------- the reference model
def build_reference_pipeline(path: Path, seed: int = 0) -> Path:
    """Save the reference SD1.5-shaped pipeline (random weights) at ``path``."""
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )

    from flash_exp.toyworld.teacher import build_text_encoder, build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(WORDS)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=8, sample_size=32)
    scheduler = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    StableDiffusionPipeline(vae=vae, text_encoder=build_text_encoder(tokenizer), tokenizer=tokenizer, unet=unet,
                            scheduler=scheduler, safety_checker=None, feature_extractor=None,
                            requires_safety_checker=False).save_pretrained(path)
    return path


def reference_config(pretrained: Path, *overrides: str) -> TrainConfig:
    return compose_train_config([
        "backbone=sd15", f"backbone.pretrained={pretrained}", "backbone.resolution=32",
        "backbone.lora.rank=16", "backbone.lora.alpha=16", "backbone.discriminator.head=generic",
        "backbone.discriminator.channels=[64,128]",
        "loss.distill.type=l2", "data.shards=[unused]", f"phases.k=[{K},{K},{K},{K}]", *overrides,
    ])


# ---------------------------------------------------------------------------------- measurement
@dataclass
class Timing:
    label: str
    median_s: float
    min_s: float
    teacher_evals: float  # batch-B teacher evaluations per data batch
    student_evals: float
    peak_mb: float


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def modes_overrides(index: int | None) -> list[str]:
    """Fix the start index at mode ``index`` (0..3) in every phase, or keep the paper's mixture (None)."""
    if index is None:
        return []
    row = [1.0 if j == index else 0.0 for j in range(4)]
    return ["timesteps=modes", f"timesteps.mode_probs=[{row},{row},{row},{row}]"]


class StepRunner:
    """One training step (generator update, then discriminator update) of the distiller."""

    def __init__(self, distiller: FlashDistiller, device: torch.device, second_rollout: bool = False):
        self.d, self.device, self.second_rollout = distiller, device, second_rollout
        b = distiller.backbone
        params = b.trainable_parameters()
        self.opt_g = torch.optim.AdamW(params, lr=1e-5)
        self.opt_d = torch.optim.AdamW(distiller.discriminator.parameters(), lr=1e-5)
        g = torch.Generator().manual_seed(0)
        self.z = torch.randn(BATCH, 4, 16, 16, generator=g).to(device)
        prompts = [f"a {c} circle on a black background" for c in ("red", "green", "blue", "yellow")]
        self.cond = b.encode_prompts(prompts)
        self.null = b.null_condition(BATCH)
        self.generator = torch.Generator().manual_seed(1)

    def __call__(self, step: int) -> None:
        loss, _, disc_inputs = self.d.generator_loss(self.z, self.cond, self.null, step, self.generator)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        if self.second_rollout:  # the official code reruns the whole forward for the discriminator
            with torch.no_grad():
                _, _, disc_inputs = self.d.generator_loss(self.z, self.cond, self.null, step, self.generator)
        d_loss, _ = self.d.discriminator_loss(disc_inputs)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()


def time_steps(label: str, run: Callable[[int], None], backbone, step: int, batches: int, warmup: int,
               device: torch.device) -> Timing:
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


@contextlib.contextmanager
def cfg_as_two_calls() -> Iterator[None]:
    """Replace the batched CFG call by separate conditional and unconditional calls."""
    def two_calls(backbone, x_t, t, cond: Condition, null: Condition, guidance):
        with backbone.adapter(False):
            out_cond = backbone.denoise(x_t, t, cond)
            out_null = backbone.denoise(x_t, t, null)
        w = torch.as_tensor(guidance, dtype=x_t.dtype, device=x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
        return out_null + w * (out_cond - out_null)

    with mock.patch.object(distiller_module, "guided_output", two_calls):
        yield


@contextlib.contextmanager
def no_grad_instead_of_inference_mode() -> Iterator[None]:
    with mock.patch.object(torch, "inference_mode", torch.no_grad):
        yield


@contextlib.contextmanager
def classic_attention(backbone) -> Iterator[None]:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    backbone.denoiser.set_attn_processor(AttnProcessor())
    try:
        yield
    finally:
        backbone.denoiser.set_attn_processor(AttnProcessor2_0())


# ---------------------------------------------------------------------------------- sections
def bench_training(pretrained: Path, device: torch.device, batches: int, warmup: int) -> list[Timing]:
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
        ("before: second teacher rollout for the discriminator", lambda: contextlib.nullcontext(), True),
        ("before: CFG as two calls", cfg_as_two_calls, False),
        ("before: no_grad instead of inference_mode", no_grad_instead_of_inference_mode, False),
        ("before: classic attention instead of SDPA", lambda: classic_attention(backbone), False),
    ]
    for label, context, second in before:
        with context():
            runner = StepRunner(build_distiller(backbone, fixed0).to(device), device, second_rollout=second)
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
    from flash_exp.metrics.clip_score import clip_scores, toy_clip_model
    from flash_exp.metrics.features import clip_image_extractor
    from flash_exp.metrics.fid import image_features
    from flash_exp.toyworld import assets
    from flash_exp.toyworld.quality import load_heldout

    clip = toy_clip_model()
    extractor = clip_image_extractor(clip)
    images, captions = load_heldout(assets.ASSETS, count)
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


# ---------------------------------------------------------------------------------- report
def render(device_name: str, training: list[Timing], sampling: list[dict], evaluation: list[dict],
           batches: int, warmup: int) -> str:
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
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--skip-eval", action="store_true", help="skip the evaluation throughput section")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = build_reference_pipeline(Path(tmp) / "reference")
        training = bench_training(pretrained, device, args.batches, args.warmup)
        sampling = bench_sampling(pretrained, device, max(1, args.batches // 2))
    evaluation = [] if args.skip_eval else bench_evaluation(max(1, args.batches))
    name = device_description(device)
    report = render(name, training, sampling, evaluation, args.batches, args.warmup)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    result = {"device": name, "training": [r.__dict__ for r in training], "sampling": sampling,
              "evaluation": evaluation, "batches": args.batches, "warmup": args.warmup}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
