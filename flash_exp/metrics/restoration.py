"""Restoration metrics of the conditional tasks that have a ground truth (inpainting, super-resolution,
face swapping with the target's own identity): PSNR, SSIM and LPIPS against it, through torchmetrics.

PSNR and SSIM always run. LPIPS needs the VGG16 ImageNet weights of torchvision (not downloadable
here); without them the result says so (``lpips: null`` and ``lpips_note``) instead of failing.

Plus what the condition asks beyond the ground truth (see each task's ``condition_metrics``): the
PSNR of the region an inpainting must keep, the PSNR of a super-resolved image downscaled against
its low-res input, the edge F1 of an adapter output against its edge map.

The evaluation calls :func:`evaluate_task`: it samples the student (each NFE, no CFG) and the teacher
(its own budget, with CFG) on a fixed set of held-out conditions and returns a JSON-ready dict.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ metrics
def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of (B, C, H, W) images in [0, 1] (mean over the batch of per-image PSNR)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    value = peak_signal_noise_ratio(pred.float().clamp(0, 1), target.float().clamp(0, 1), data_range=1.0,
                                    reduction="none", dim=(1, 2, 3))
    return float(value.mean())


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM of (B, C, H, W) images in [0, 1] (Gaussian window 11, sigma 1.5; smaller for tiny images)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(pred.shape[-2:])
    kernel = 11 if side >= 11 else max(3, side // 2 * 2 - 1)
    value = structural_similarity_index_measure(pred.float().clamp(0, 1), target.float().clamp(0, 1),
                                                data_range=1.0, kernel_size=kernel,
                                                sigma=1.5 * kernel / 11)
    return float(value)


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> float:
    """PSNR over the pixels where ``weight`` (B, 1, H, W) is 1, images in [0, 1]; inf when equal."""
    w = weight.float().expand_as(pred)
    mse = ((pred.float() - target.float()) ** 2 * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1)
    return float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())


def edge_f1(found: torch.Tensor, reference: torch.Tensor, tolerance: int = 1) -> float:
    """F1 of binary edge maps (B, 1, H, W) with ``tolerance`` pixels of slack (max-pool matching)."""
    import torch.nn.functional as F

    a, b = (found > 0.5).float(), (reference > 0.5).float()
    k = 2 * tolerance + 1
    near_b = F.max_pool2d(b, k, stride=1, padding=tolerance)
    near_a = F.max_pool2d(a, k, stride=1, padding=tolerance)
    precision = (a * near_b).sum() / a.sum().clamp_min(1)
    recall = (b * near_a).sum() / b.sum().clamp_min(1)
    return float(2 * precision * recall / (precision + recall).clamp_min(1e-8))


class LpipsUnavailable(RuntimeError):
    pass


def build_lpips(weights: str | None = None) -> torch.nn.Module:
    """torchmetrics' LPIPS (VGG) with the VGG16 weights read from a local file (see
    :func:`flash_exp.training.module.build_lpips`); raises :class:`LpipsUnavailable` with the reason."""
    from flash_exp.training.module import build_lpips as build

    try:
        return build(weights)
    except (FileNotFoundError, ValueError) as err:
        raise LpipsUnavailable(str(err)) from err


def lpips_distance(pred: torch.Tensor, target: torch.Tensor, net: torch.nn.Module) -> float:
    """Mean LPIPS of (B, 3, H, W) images in [0, 1] (the network takes [-1, 1])."""
    with torch.no_grad():
        return float(net(pred.float() * 2 - 1, target.float() * 2 - 1).mean())


def restoration_metrics(pred: torch.Tensor, target: torch.Tensor, lpips: torch.nn.Module | str | None = "auto",
                        lpips_weights: str | None = None) -> dict:
    """PSNR, SSIM and LPIPS of ``pred`` against ``target`` ((B, 3, H, W) in [0, 1]).

    ``lpips``: a built network, ``"auto"`` (build it when the VGG weights are on this machine, else
    report ``None`` with ``lpips_note``), or None (skip).
    """
    out: dict = {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "lpips": None}
    net = lpips
    if lpips == "auto":
        try:
            net = build_lpips(lpips_weights)
        except LpipsUnavailable as err:
            out["lpips_note"] = f"LPIPS skipped: {err}"
            net = None
    if isinstance(net, torch.nn.Module):
        out["lpips"] = lpips_distance(pred, target, net.to(pred.device))
    return out


# ------------------------------------------------------------------------------------------ sampling
def held_out_conditions(cfg, count: int, seed: int | None = None, allow_command_urls: bool = False) -> dict:
    """A batch of the first ``count`` usable samples of ``task.grid_shards`` (or the training shards),
    in file order, each once (fewer when the shards hold fewer), with the task's inputs (masks,
    degradations, edge maps) drawn from generators seeded by ``seed`` (default ``cfg.seed``) and the
    sample's position. Keys: those of a training batch plus ``key`` (the samples' ``__key__``).
    ``pipe:`` shard URLs are refused unless ``allow_command_urls``: an evaluation never runs the
    commands of a saved config."""
    from itertools import islice

    from flash_exp.data.webdataset import CaptionedImageStream
    from flash_exp.tasks import build_sample_transform

    shards = list(cfg.task.grid_shards) or list(cfg.data.shards)
    stream = CaptionedImageStream(
        shards=shards, resolution=cfg.backbone.resolution, batch_size=count, seed=cfg.seed if seed is None else seed,
        image_keys=cfg.data.image_key, caption_key=cfg.data.caption_key, crop_size=cfg.data.crop_size,
        transform=build_sample_transform(cfg.task, cfg.backbone.resolution), allow_command_urls=allow_command_urls,
    )
    items = list(islice(stream.one_pass(), count))
    if not items:
        raise FileNotFoundError(f"no usable held-out sample in {shards[:3]} (task.grid_shards / data.shards)")
    return stream.collate(items)


def grid_batch(cfg, count: int | None = None, allow_command_urls: bool = False) -> dict:
    """The conditions a sample grid shows: :func:`held_out_conditions` of ``task.num_grid_samples``."""
    return held_out_conditions(cfg, count or cfg.task.num_grid_samples, allow_command_urls=allow_command_urls)


def batch_digest(batch: dict) -> str:
    """sha256 of a batch's tensors (bytes, shape, dtype) and strings, in key order: which conditions."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(batch):
        value = batch[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(f"{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def batch_slice(batch: dict, start: int, stop: int) -> dict:
    """Samples ``start:stop`` of a batch (tensors and lists alike)."""
    return {k: v[start:stop] for k, v in batch.items()}


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def sample_task(backbone, task, batch: dict, student: bool, steps: int, guidance: float, seed: int) -> torch.Tensor:
    """Outputs (B, 3, R, R) in [0, 1] for the conditions of ``batch`` (see :func:`sample_conditional`)."""
    from flash_exp.training.samples import sample_conditional

    prepared = task.prepare(batch, backbone)
    return sample_conditional(backbone, prepared.condition, prepared.null_condition, tuple(prepared.latents.shape),
                              student, steps, guidance, seed)


def evaluate_task(backbone, task, cfg, student_nfe: list[int] | None = None, count: int = 16,
                  teacher: bool = True, lpips: torch.nn.Module | str | None = "auto",
                  lpips_weights: str | None = None, seed: int = 0) -> dict:
    """Scores of the student (each NFE, no CFG) and the teacher (its budget, CFG) on ``count`` held-out
    conditions: PSNR / SSIM / LPIPS against the ground truth when the task has one, and the task's
    condition metrics. JSON-ready: ``{"task", "count", "samplers": {name: {metric: value}}, ...}``."""
    device = next(backbone.denoiser.parameters()).device
    batch = to_device(grid_batch(cfg, count), device)  # unswapped: face swapping has its ground truth
    truth = task.ground_truth(batch)
    net = lpips
    notes = {}
    if truth is not None and lpips == "auto":
        try:
            net = build_lpips(lpips_weights)
        except LpipsUnavailable as err:
            net, notes["lpips_note"] = None, f"LPIPS skipped: {err}"
    settings = [(f"student_nfe{n}", True, n, 0.0) for n in (student_nfe or list(cfg.trainer.sample_nfe))]
    if teacher:
        ts = cfg.backbone.teacher_sampling
        settings.append((f"teacher_nfe{ts.steps}", False, ts.steps, ts.guidance))
    results = {}
    for name, student, steps, guidance in settings:
        images = sample_task(backbone, task, batch, student, steps, guidance, seed)
        scores: dict = {}
        if truth is not None:
            scores.update(restoration_metrics(images, (truth.to(images) + 1) / 2, lpips=net if net != "auto" else None))
            scores.pop("lpips_note", None)
        scores.update(task.condition_metrics(images, batch))
        results[name] = scores
        log.info("%s %s: %s", task.name, name, scores)
    return {"kind": "flash_exp.restoration", "task": task.name, "count": int(batch["pixels"].shape[0]),
            "seed": seed, "ground_truth": truth is not None, "samplers": results, **notes}


__all__ = ["LpipsUnavailable", "build_lpips", "edge_f1", "evaluate_task", "batch_digest", "batch_slice", "grid_batch",
           "held_out_conditions", "lpips_distance",
           "masked_psnr", "psnr", "restoration_metrics", "sample_task", "ssim"]
