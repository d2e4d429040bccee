"""The gallery of a benchmark x sampler setting: copies of draw 0's first images, kept when the rest go.

Every run and setting samples the same first prompts from the same initial noise, so the galleries
of two settings show the same prompts side by side. Layout:
``<run>/eval/<benchmark>/gallery/<setting>/<i:06d>.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from flash_exp.metrics.images import image_path
from flash_exp.metrics.results import EVAL_DIR

GALLERY_SIZE = 8
GALLERY_DIR = "gallery"


def gallery_dir(run_dir: Path, benchmark: str, setting_name: str) -> Path:
    return Path(run_dir) / EVAL_DIR / benchmark / GALLERY_DIR / setting_name


def copy_gallery(files: list[Path], directory: Path, count: int = GALLERY_SIZE) -> list[Path]:
    """Copy the first ``count`` of ``files`` to ``directory/<i:06d>.png`` (replacing what was there)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    copies = []
    for i, source in enumerate(files[:count]):
        target = image_path(directory, i)
        shutil.copyfile(source, target)
        copies.append(target)
    return copies


def relative_paths(files: list[Path], run_dir: Path) -> list[str]:
    """``files`` as POSIX paths relative to ``run_dir``."""
    return [Path(f).relative_to(run_dir).as_posix() for f in files]
