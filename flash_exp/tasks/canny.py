"""Canny edge detection in torch (no OpenCV): Gaussian blur, Sobel, non-maximum suppression, hysteresis.

Thresholds are on OpenCV's scale (8-bit gray levels, L1 gradient magnitude |gx| + |gy| of the 3x3
Sobel), so ``low=100, high=200`` means what it means for ``cv2.Canny(image, 100, 200)``, the
detector the T2I-Adapter canny models were trained with (via controlnet_aux).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flash_exp.tasks.filters import gaussian_blur, resize, sobel

_LUMA = (0.299, 0.587, 0.114)


def to_gray255(image: torch.Tensor) -> torch.Tensor:
    """(B, 3 | 1, H, W) in [-1, 1] -> (B, 1, H, W) gray levels in [0, 255]."""
    x = (image.float().clamp(-1, 1) + 1) * 127.5
    if x.shape[1] == 3:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(1, keepdim=True)
    return x


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved so that out[y, x] = in[y + dy, x + dx], zeros outside."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    return padded[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]


def non_maximum_suppression(magnitude: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """Magnitudes that are a maximum along their gradient direction (0, 45, 90 or 135 degrees), else 0."""
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180.0
    sector = (((angle + 22.5) // 45.0) % 4).long()  # 0: horizontal gradient, 1: 45, 2: vertical, 3: 135
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    # neighbours along the gradient; image y grows downwards, so 45 degrees pairs (+1, +1) and (-1, -1)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        a, b = _shift(magnitude, dy, dx), _shift(magnitude, -dy, -dx)
        # ">" on one side and ">=" on the other keeps one pixel of a plateau, as OpenCV does
        keep |= (sector == s) & (magnitude > a) & (magnitude >= b)
    return torch.where(keep, magnitude, torch.zeros_like(magnitude))


def hysteresis(magnitude: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Pixels above ``high``, and those above ``low`` 8-connected to them (iterative dilation)."""
    weak = magnitude >= low
    edges = magnitude >= high
    for _ in range(magnitude.shape[-1] * magnitude.shape[-2]):
        grown = weak & (F.max_pool2d(edges.float(), 3, stride=1, padding=1) > 0)
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges


def canny(image: torch.Tensor, low: float = 100.0, high: float = 200.0, sigma: float = 1.0) -> torch.Tensor:
    """Edge map of (B, C, H, W) or (C, H, W) images in [-1, 1]: (B, 1, H, W) / (1, H, W) float in {0, 1}."""
    single = image.ndim == 3
    x = image[None] if single else image
    gray = gaussian_blur(to_gray255(x), sigma)
    gx, gy = sobel(gray)
    magnitude = gx.abs() + gy.abs()
    thin = non_maximum_suppression(magnitude, gx, gy)
    edges = hysteresis(thin, low, high).float()
    return edges[0] if single else edges


def edge_map(image: torch.Tensor, low: float, high: float, sigma: float, detect_resolution: int | None) -> torch.Tensor:
    """(1, R, R) edges in [0, 1] of a (3, R, R) image in [-1, 1]: found at ``detect_resolution`` and
    resized back to R (bilinear, antialiased when shrinking), as controlnet_aux's detect / image
    resolutions do (the map is binary when both are equal)."""
    size = image.shape[-1]
    x = image[None]
    if detect_resolution and detect_resolution != size:
        x = resize(x, detect_resolution, mode="bilinear")
    edges = canny(x, low, high, sigma)
    return resize(edges, size, mode="bilinear").clamp(0, 1)[0]


__all__ = ["canny", "edge_map", "hysteresis", "non_maximum_suppression", "to_gray255"]
