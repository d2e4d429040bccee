"""The PNG files of an evaluation: written atomically, each directory claimed by the spec that made them."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from flash_exp.files import write_json_atomic
from flash_exp.metrics.images import image_path, write_png_atomic
from flash_exp.metrics.results import read_json

log = logging.getLogger("flash_exp.evaluate")

MANIFEST_FILE = "spec.json"


def write_pngs(images: torch.Tensor, directory: Path, first: int = 0) -> list[Path]:
    """(B, 3, H, W) images in [-1, 1] as ``<directory>/<first + i>.png``; returns the paths."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    files = []
    for i, array in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        path = image_path(directory, first + i)
        write_png_atomic(Image.fromarray(array), path)
        files.append(path)
    return files


def claim(directory: Path, manifest: dict[str, Any]) -> None:
    """Make ``directory`` hold images of ``manifest`` only: images of another spec or model are removed."""
    path = directory / MANIFEST_FILE
    previous = read_json(path)
    if previous is not None and previous != manifest:
        log.warning("%s holds images of another spec or model; regenerating them", directory)
        shutil.rmtree(directory)
    if previous != manifest:
        write_json_atomic(path, manifest)
