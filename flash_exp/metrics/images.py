"""The crop-and-resize policy applied to real and generated images alike, and atomic PNG writes.

Policy (GigaGAN / DMD2 COCO evaluation): a square centre crop whose side is the shorter image side
(the long edge is cropped), then a PIL LANCZOS resize to ``eval_res`` x ``eval_res``. FID then
applies clean-fid's own "clean" resize (PIL bicubic per channel in float32) to the feature
extractor's input size; the CLIP score applies the CLIP model's own preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from flash_exp.files import atomic_path

RESIZE_POLICY = "center-crop-long-edge+pil-lanczos"


@dataclass(frozen=True)
class CenterCropResize:
    """Square centre crop of side min(H, W), then PIL LANCZOS resize to ``size`` x ``size``.

    Called on an RGB uint8 array (H, W, 3), as clean-fid's ``custom_image_tranform``; returns a
    uint8 array (size, size, 3). :meth:`pil` does the same on a PIL image.
    """

    size: int

    def pil(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = min(width, height)
        left = int(round((width - side) / 2.0))
        top = int(round((height - side) / 2.0))
        square = image.convert("RGB").crop((left, top, left + side, top + side))
        if side == self.size:
            return square
        return square.resize((self.size, self.size), resample=Image.LANCZOS)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(self.pil(Image.fromarray(image.astype(np.uint8))))


def write_png_atomic(image: Image.Image, path: Path) -> None:
    """Save ``image`` as PNG at ``path`` through a temporary name, so a killed process leaves no
    half-written PNG under the final name."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def image_path(directory: Path, index: int) -> Path:
    """The file of image ``index`` of a generated set."""
    return directory / f"{index:06d}.png"
