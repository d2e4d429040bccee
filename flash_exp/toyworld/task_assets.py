"""Where the toy conditional teachers live (built by ``python -m flash_exp.toyworld.tasks``).

Layout under :data:`TASK_ASSETS` (``flash_exp/toyworld/assets/tasks``)::

    tasks.json                          build record: seconds per teacher, steps, measured PSNR / SSIM
    inpainting/                         StableDiffusionInpaintPipeline directory (9-channel UNet)
    superres/                           StableDiffusionUpscalePipeline directory (7-channel UNet, class_labels)
    adapter_canny/                      StableDiffusionAdapterPipeline directory: the toy teacher + adapter/
    faceswap/                           inpainting pipeline + image_encoder/ + image_projection/
    faces/train-*.tar.gz, heldout-*     synthetic faces: jpg, ref.jpg, json{caption, face_box, identity}

Imports nothing heavy: the ``${toytask:...}`` config resolver uses it.
"""

from __future__ import annotations

from pathlib import Path

from flash_exp.toyworld.assets import ASSETS, SHARD_SUFFIX

TASK_ASSETS = ASSETS / "tasks"
TASKS = ("inpainting", "superres", "adapter_canny", "faceswap")
INFO_FILE = "tasks.json"


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"toy-world task asset {path} is missing; build it with `python -m flash_exp.toyworld.tasks "
            f"--only {what}` (after `make toyworld`)"
        )
    return path


def task_dir(task: str, root: Path = TASK_ASSETS) -> Path:
    """The toy teacher of ``task``: a diffusers pipeline directory."""
    if task not in TASKS:
        raise ValueError(f"no toy teacher for task {task!r}; known: {', '.join(TASKS)}")
    return _require(root / task / "model_index.json", task).parent


def faces_shards(split: str, root: Path = TASK_ASSETS) -> list[str]:
    shards = sorted(str(p) for p in (root / "faces").glob(f"{split}-*{SHARD_SUFFIX}"))
    if not shards:
        raise FileNotFoundError(
            f"no {split} face shards under {root / 'faces'}; build them with "
            "`python -m flash_exp.toyworld.tasks --only faceswap`"
        )
    return shards


def resolve(name: str):
    """``${toytask:<task>}`` a teacher directory; ``${toytask:faces_train_shards}`` / ``faces_heldout_shards``."""
    if name == "faces_train_shards":
        return faces_shards("train")
    if name == "faces_heldout_shards":
        return faces_shards("heldout")
    return str(task_dir(name))


__all__ = ["INFO_FILE", "TASKS", "TASK_ASSETS", "faces_shards", "resolve", "task_dir"]
