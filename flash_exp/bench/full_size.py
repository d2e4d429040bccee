"""The full-size bench (``python -m flash_exp.bench --full-size``): the paper backbones' real
architectures (random weights, :mod:`~flash_exp.bench.architectures`) trained by the same code path as
``python -m flash_exp.train``: ``build_backbone`` on a pipeline directory, ``build_distiller`` with the
paper's losses (LPIPS on a random-weight VGG16 of the real shape), :meth:`FlashDistiller.train_step`.

A case is one backbone at one resolution under one memory preset (``conf/trainer/gpu24|gpu40|gpu80``
on a GPU, ``cpu`` on a CPU). The data batch is a cached one: random latents of the real shape and the
prompts encoded once, as with ``data.cached=true``. Per case: the step of phase 3 (every loss on) at the
paper's K, with the start index fixed at 0 (the longest teacher rollout, K steps) and at the phase-3
mean of the paper's mixture, each one warm-up then timed batches; peak allocated and reserved GPU
memory (peak RSS on a CPU); the student's 4-NFE sampling in images/s. On a GPU each preset runs under
a memory cap of its card's size (``torch.cuda.set_per_process_memory_fraction``), so a ``gpu24`` case
that fits here fits a 24 GB card; a case whose card does not fit in the free memory is skipped, and
one that runs out of memory under its cap is reported as such.
"""

from __future__ import annotations

import contextlib
import gc
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from flash_exp.bench.architectures import model_specs, parameter_count, text_encoder_note, write_pipeline
from flash_exp.bench.steps import StepRunner, time_steps
from flash_exp.config import TrainConfig, compose_train_config

PAPER_BACKBONES = ("sd15", "sdxl", "pixart", "sd3")  # the default cases
BACKBONES = (*PAPER_BACKBONES, "sd35", "sd35_large")
GPU_PRESETS = ("gpu24", "gpu40", "gpu80")
CARD_BYTES = {"gpu24": 24e9, "gpu40": 40e9, "gpu80": 80e9}  # the card each preset is meant for
PHASE3 = 3  # the step index that lies in phase 3 when every phase is one batch long
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
SAMPLING_NFE = 4
GB = 1e9


@dataclass
class Case:
    backbone: str
    preset: str
    resolution: int | None = None  # None: the backbone's paper resolution
    batch_size: int | None = None  # None: the preset's
    overrides: tuple[str, ...] = ()  # further training-config overrides


@dataclass
class CaseResult:
    backbone: str
    preset: str
    resolution: int = 0
    batch_size: int = 0
    k: int = 0
    rows: list[dict] = field(default_factory=list)  # per start index: timing, memory, loss
    sampling_images_per_s: float | None = None
    frozen_dtype: str = ""  # the preset's settings, which ``plan`` matches against a run's config
    gradient_checkpointing: bool = False
    offload_frozen: bool = False
    allocated_before_gb: float = 0.0  # GPU memory still allocated when the case started (in its peaks)
    skipped: str | None = None  # why the case did not run (or stopped)
    note: str | None = None  # what differs from the published model (text encoders)


def card_check(preset: str, free_bytes: float, weights_bytes: float) -> str | None:
    """Why a ``preset`` case cannot run on a device with ``free_bytes`` free, or None when it can: the
    preset's card must fit in the free memory, and the weights that live on the GPU in the card."""
    card = CARD_BYTES.get(preset)
    if card is None:
        return None
    if free_bytes < card:
        return (f"skipped: {preset} is meant for a {card / GB:.0f} GB card and {free_bytes / GB:.1f} GB "
                f"are free on this device")
    if weights_bytes > card:
        return (f"skipped: the weights on the GPU alone take {weights_bytes / GB:.1f} GB, more than "
                f"{preset}'s {card / GB:.0f} GB")
    return None


def gpu_weights_bytes(cfg: TrainConfig) -> float:
    """Bytes of the frozen weights that stay on the GPU under ``cfg``'s preset: the denoiser and the VAE
    at ``backbone.dtype``, plus the text encoders unless ``trainer.offload_frozen`` (counted on meta)."""
    size = DTYPE_BYTES[cfg.backbone.dtype]
    total = 0
    for spec in model_specs(cfg.backbone.name):
        if spec.attr.startswith("text_encoder") and cfg.trainer.offload_frozen:
            continue
        total += parameter_count(spec) * size
    return float(total)


def case_config(case: Case, pretrained: Path, lpips_weights: Path, start_index: int | None) -> TrainConfig:
    """The training config of ``case``: the backbone's paper settings, the preset, phases one batch long
    (so step 3 is phase 3), and the start index fixed at ``start_index`` (None: the paper's mixture)."""
    overrides = [f"backbone={case.backbone}", f"trainer={case.preset}", f"backbone.pretrained={pretrained}",
                 "data.shards=[unused]", "phases.iterations=[1,1,1,1]", f"loss.distill.lpips_weights={lpips_weights}"]
    if case.resolution is not None:
        overrides.append(f"backbone.resolution={case.resolution}")
    if case.batch_size is not None:
        overrides.append(f"data.batch_size={case.batch_size}")
    overrides += list(case.overrides)
    if start_index is not None:  # one bump of negligible width: the index itself
        overrides += ["timesteps.distribution=gaussian", f"timesteps.gaussian_mean={start_index}",
                      "timesteps.gaussian_variance=0.001"]
    return compose_train_config(overrides)


def phase3_mean_index(cfg: TrainConfig) -> int:
    """The mean start index of phase 3 under the config's distribution, rounded."""
    from flash_exp.method.timesteps import timestep_distribution

    k, t = cfg.phases.k[PHASE3], cfg.timesteps
    probs = timestep_distribution(t.distribution, k, t.mode_probs[PHASE3], t.variance, t.gaussian_mean,
                                  t.gaussian_variance)
    return round(float(sum(p * i for i, p in enumerate(probs.tolist()))))


def write_random_vgg16(path: Path) -> Path:
    """A torchvision VGG16 state dict with random weights (the LPIPS trunk's real shapes)."""
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg16(weights=None).features
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return path


def prepare_backbone(cfg: TrainConfig, device: torch.device):
    """The backbone as training builds it (``build_backbone`` on ``backbone.pretrained``), on ``device``."""
    from flash_exp.backbones import build_backbone

    return build_backbone(cfg.backbone).to(device)


def prepare_step(backbone, cfg: TrainConfig, device: torch.device) -> StepRunner:
    """The distiller of ``cfg`` on ``backbone`` as training builds it, its step on a fixed batch under the
    preset's precision, and (``trainer.offload_frozen`` on a GPU) the frozen encoders in CPU memory,
    visiting the GPU to encode the batch's prompts."""
    from flash_exp.method import build_distiller
    from flash_exp.metrics.restoration import build_lpips

    lpips = build_lpips(cfg.loss.distill.lpips_weights) if cfg.loss.distill.type == "lpips" else None
    distiller = build_distiller(backbone, cfg, lpips).to(device)
    if cfg.trainer.offload_frozen and device.type == "cuda":
        backbone.offload_frozen(device)
    side = backbone.latent_size()
    with backbone.frozen_on_device():
        return StepRunner(distiller, device, cfg.data.batch_size, (int(backbone.vae.config.latent_channels), side, side),
                          _autocast(cfg), cfg.trainer.optim)


def peak_memory(device: torch.device) -> dict[str, float]:
    """Peak allocated and reserved GPU memory in GB, or the process's peak RSS in GB on a CPU."""
    if device.type == "cuda":
        return {"peak_allocated_gb": torch.cuda.max_memory_allocated(device) / GB,
                "peak_reserved_gb": torch.cuda.max_memory_reserved(device) / GB}
    import resource

    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB}


def sampling_images_per_s(backbone, cfg: TrainConfig, autocast: torch.dtype | None, repeats: int) -> float:
    """Images per second of the student at 4 NFE (its few-step scheduler, no CFG), batch of the preset,
    after one warm-up, under the preset's precision."""
    from flash_exp.training.samples import sample_images

    prompts = ["a photo of an astronaut riding a horse on the moon"] * cfg.data.batch_size
    device = next(backbone.denoiser.parameters()).device

    def run(seed: int) -> None:
        context = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with context, backbone.frozen_on_device():
            sample_images(backbone, prompts, True, SAMPLING_NFE, 0.0, seed, cfg.backbone.resolution)

    run(0)
    _sync(device)
    start = time.perf_counter()
    for r in range(repeats):
        run(r + 1)
    _sync(device)
    return repeats * len(prompts) / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: Case, pretrained: Path, lpips_weights: Path, device: torch.device, batches: int,
             warmup: int, free_memory: Callable[[], float], sampling_repeats: int = 2,
             log: Callable[[str], None] = print) -> CaseResult:
    """Time ``case`` at start index 0 and at the phase-3 mean; skipped (with the reason) when its card
    does not fit in ``free_memory()`` bytes, or out of memory under the cap of its card's size."""
    paper = case_config(case, pretrained, lpips_weights, None)
    result = CaseResult(case.backbone, case.preset, paper.backbone.resolution, paper.data.batch_size,
                        paper.phases.k[PHASE3], note=text_encoder_note(case.backbone), frozen_dtype=paper.backbone.dtype,
                        gradient_checkpointing=paper.backbone.gradient_checkpointing,
                        offload_frozen=paper.trainer.offload_frozen)
    if device.type == "cuda":
        reason = card_check(case.preset, free_memory(), gpu_weights_bytes(paper))
        if reason is not None:
            log(f"{case.backbone} {case.preset}: {reason}")
            result.skipped = reason
            return result
        result.allocated_before_gb = torch.cuda.memory_allocated(device) / GB
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, CARD_BYTES[case.preset] / total), device)
    backbone = runner = None
    try:
        backbone = prepare_backbone(paper, device)
        for index in (0, phase3_mean_index(paper)):
            cfg = case_config(case, pretrained, lpips_weights, index)
            runner = prepare_step(backbone, cfg, device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            timing = time_steps(f"start index {index}", runner, backbone, PHASE3, batches, warmup, device,
                                cfg.data.batch_size)
            row = {"start_index": index, "median_s": timing.median_s, "min_s": timing.min_s,
                   "teacher_evals": timing.teacher_evals, "student_evals": timing.student_evals,
                   "loss": runner.losses.get(0, math.nan), **peak_memory(device)}
            result.rows.append(row)
            log(f"{case.backbone} {case.preset} {result.resolution}px B={result.batch_size}: {row}")
            runner = None
            _free(device)
        result.sampling_images_per_s = sampling_images_per_s(backbone, paper, _autocast(paper), sampling_repeats)
    except torch.cuda.OutOfMemoryError:
        cap = CARD_BYTES.get(case.preset, 0) / GB
        result.skipped = f"out of memory under the {cap:.0f} GB cap of {case.preset}"
        log(f"{case.backbone} {case.preset}: {result.skipped}")
        _free(device)
    finally:
        del backbone, runner
        _free(device)
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    return result


def _autocast(cfg: TrainConfig) -> torch.dtype | None:
    """Lightning's ``bf16-mixed`` runs under ``torch.autocast(dtype=bfloat16)``."""
    return torch.bfloat16 if cfg.trainer.precision.startswith("bf16") else None


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def cuda_free_bytes() -> float:
    """Free GPU memory in bytes, after the caching allocator gave back what it holds unused."""
    _free(torch.device("cuda"))
    return float(torch.cuda.mem_get_info()[0])


def bench_full_size(cases: list[Case], device: torch.device, batches: int = 3, warmup: int = 1,
                    work_dir: Path | None = None, free_memory: Callable[[], float] | None = None,
                    budget_s: float | None = None, log: Callable[[str], None] = print) -> list[CaseResult]:
    """Run ``cases`` (grouped by backbone: each pipeline directory is written once); a case that would
    start after ``budget_s`` seconds is skipped, saying so."""
    free_memory = free_memory or cuda_free_bytes
    start = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        lpips_weights = write_random_vgg16(Path(tmp) / "vgg16-random.pth")
        for backbone in dict.fromkeys(c.backbone for c in cases):
            pretrained = None
            for case in [c for c in cases if c.backbone == backbone]:
                if budget_s is not None and time.perf_counter() - start > budget_s:
                    results.append(CaseResult(case.backbone, case.preset, skipped=f"skipped: past the "
                                              f"{budget_s:.0f} s budget of this run"))
                    continue
                if pretrained is None:
                    log(f"{backbone}: writing its pipeline (random weights)")
                    pretrained = write_pipeline(backbone, Path(tmp) / backbone, device)
                    _free(device)
                results.append(run_case(case, pretrained, lpips_weights, device, batches, warmup, free_memory,
                                        log=log))
            if pretrained is not None:
                import shutil

                shutil.rmtree(pretrained, ignore_errors=True)
    return results


def default_cases(device: torch.device, backbones: list[str], resolution: int | None = None,
                  batch_size: int | None = None, presets: list[str] | None = None,
                  overrides: tuple[str, ...] = ()) -> list[Case]:
    """Every backbone under every preset of ``presets`` (default: the GPU presets on a GPU, ``cpu`` on
    a CPU)."""
    presets = presets or (GPU_PRESETS if device.type == "cuda" else ("cpu",))
    return [Case(b, p, resolution, batch_size, overrides) for b in backbones for p in presets]


def evaluation_throughput(device: torch.device, batch: int = 32, repeats: int = 3) -> list[dict]:
    """Images per second of the evaluation's feature extractors at their real shapes, random weights,
    float32 as the evaluation runs them: Inception-v3 pool features (299 px, FID) and open_clip
    ViT-g-14's image and text towers (224 px, 77 tokens, CLIP score)."""
    rows = [{"stage": "Inception-v3 pool features (FID), 299 px", "images_per_s": _inception_rate(device, batch, repeats)}]
    _free(device)
    rows += _clip_rates(device, batch, repeats)
    _free(device)
    return rows


def _inception_rate(device: torch.device, batch: int, repeats: int) -> float:
    import torchvision

    with torch.device(device):
        inception = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False).eval()
    inception.fc = torch.nn.Identity()  # the 2048-d pool features
    images = torch.randn(batch, 3, 299, 299, device=device)
    return _throughput(lambda: inception(images), batch, repeats, device)


def _clip_rates(device: torch.device, batch: int, repeats: int) -> list[dict]:
    import open_clip

    with torch.device(device):
        clip = open_clip.create_model("ViT-g-14", pretrained=None, device=device).eval()
    pixels = torch.randn(batch, 3, 224, 224, device=device)
    tokens = torch.randint(0, 49408, (batch, 77), device=device)
    return [
        {"stage": "CLIP ViT-g-14 image tower, 224 px",
         "images_per_s": _throughput(lambda: clip.encode_image(pixels), batch, repeats, device)},
        {"stage": "CLIP ViT-g-14 image + text towers (CLIP score)",
         "images_per_s": _throughput(lambda: (clip.encode_image(pixels), clip.encode_text(tokens)), batch, repeats,
                                     device)},
    ]


@torch.inference_mode()
def _throughput(run: Callable[[], object], batch: int, repeats: int, device: torch.device) -> float:
    run()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        run()
    _sync(device)
    return repeats * batch / (time.perf_counter() - start)


def results_json(results: list[CaseResult]) -> list[dict]:
    return [asdict(r) for r in results]


__all__ = ["BACKBONES", "CARD_BYTES", "GPU_PRESETS", "PAPER_BACKBONES", "Case", "CaseResult", "bench_full_size", "card_check",
           "case_config", "default_cases", "evaluation_throughput", "gpu_weights_bytes", "phase3_mean_index",
           "prepare_backbone", "prepare_step", "results_json", "run_case", "write_random_vgg16"]
