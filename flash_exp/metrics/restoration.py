"""Restoration metrics of the conditional tasks that have a ground truth (inpainting, super-resolution,
face swapping with the target's own identity): PSNR, SSIM and LPIPS against it, through torchmetrics.

PSNR and SSIM always run. LPIPS needs the VGG16 ImageNet weights of torchvision (not downloadable
here); without them the result says so (``lpips: null`` and ``lpips_note``) instead of failing.

Plus what the condition asks beyond the ground truth (see each task's ``condition_metrics``): the
PSNR of the region an inpainting must keep, the PSNR of a super-resolved image downscaled against
its low-res input, the edge F1 of an adapter output against its edge map.

Scores only: sampling the held-out conditions lives in :mod:`flash_exp.training.samples` and
:mod:`flash_exp.evaluation.task_runs`.
"""

from __future__ import annotations

from pathlib import Path

import torch


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


def lpips_weights_path(weights: str | None) -> Path:
    """Where LPIPS reads its VGG16 ImageNet weights: ``weights``, else torchvision's cache file
    ``<torch hub dir>/checkpoints/vgg16-397923af.pth``."""
    return Path(weights) if weights else Path(torch.hub.get_dir()) / "checkpoints" / "vgg16-397923af.pth"


def build_lpips(weights: str | None = None) -> torch.nn.Module:
    """LPIPS (VGG16) from torchmetrics, with the VGG16 ImageNet weights read from a local file.

    ``weights`` defaults to torchvision's cache file ``<torch hub dir>/checkpoints/vgg16-397923af.pth``.
    Raises FileNotFoundError when the file is missing, ValueError when it is not a VGG16 state dict.
    """
    from torchmetrics.functional.image.lpips import _LPIPS

    path = lpips_weights_path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"LPIPS needs the torchvision VGG16 ImageNet weights at {path} (no network here). Copy "
            "vgg16-397923af.pth there, or pass loss.distill.lpips_weights=<file>, or use "
            "loss.distill.type=l2."
        )
    lpips = _LPIPS(pretrained=True, net="vgg", pnet_rand=True)
    state = torch.load(path, map_location="cpu", weights_only=True)
    slices = {}
    for name, child in lpips.net.named_children():
        for index, _ in child.named_children():
            slices[index] = name
    mapped = {}
    for key, value in state.items():
        if key.startswith("features."):
            index, param = key.split(".")[1], key.split(".", 2)[2]
            mapped[f"{slices[index]}.{index}.{param}"] = value
    missing, _ = lpips.net.load_state_dict(mapped, strict=False)
    if missing:
        raise ValueError(f"{path} is not a torchvision VGG16 state dict (missing {missing[:3]})")
    lpips.requires_grad_(False)
    return lpips.eval()


def optional_lpips(weights: str | None = None) -> tuple[torch.nn.Module | None, str]:
    """:func:`build_lpips`, or None with the reason (``"LPIPS skipped: ..."``) when the VGG16 weights
    are not on this machine; the reason is empty when it was built."""
    try:
        return build_lpips(weights), ""
    except (FileNotFoundError, ValueError) as err:
        return None, f"LPIPS skipped: {err}"


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
        net, note = optional_lpips(lpips_weights)
        if net is None:
            out["lpips_note"] = note
    if isinstance(net, torch.nn.Module):
        out["lpips"] = lpips_distance(pred, target, net.to(pred.device))
    return out


__all__ = ["build_lpips", "edge_f1", "lpips_distance", "masked_psnr", "optional_lpips", "psnr",
           "restoration_metrics", "ssim"]
