"""Where the shipped toy-world assets live, and the ``${toyworld:...}`` / ``${toytask:...}`` resolvers.

The assets are built by ``python -m flash_exp.toyworld`` (text-to-image) and ``python -m
flash_exp.toyworld.tasks`` (the conditional teachers) and stay under ``flash_exp/toyworld/assets/``;
this module only names their paths and imports nothing of the toy world's code. Layout under
:data:`ASSETS`::

    toyworld.json                      build record: seed, sizes, VAE scaling factor, teacher sampling budget
    data/train-000000.tar.gz ...       training shards (jpg + json{caption, aesthetic_score})
    data/heldout-000000.tar.gz ...     held-out shards, same format
    teacher/                           a diffusers StableDiffusionPipeline directory
    clip/toy-clip.json                 open_clip model config of "toy-clip"
    clip/open_clip_model.safetensors   its weights
    tasks/tasks.json                   build record of the task teachers: seconds, steps, PSNR / SSIM
    tasks/inpainting/                  StableDiffusionInpaintPipeline directory (9-channel UNet)
    tasks/superres/                    StableDiffusionUpscalePipeline directory (7-channel UNet, class_labels)
    tasks/adapter_canny/               StableDiffusionAdapterPipeline directory: the toy teacher + adapter/
    tasks/faceswap/                    inpainting pipeline + image_encoder/ + image_projection/
    tasks/faces/train-*.tar.gz, heldout-*   synthetic faces: jpg, ref.jpg, json{caption, face_box, identity}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parents[1] / "toyworld" / "assets"
TOYWORLD_RECORD = "toyworld.json"
SHARD_SUFFIX = ".tar.gz"
CLIP_MODEL_NAME = "toy-clip"
CLIP_CONFIG_FILE = f"{CLIP_MODEL_NAME}.json"
CLIP_WEIGHTS_FILE = "open_clip_model.safetensors"

TASK_ASSETS = ASSETS / "tasks"
TOY_TASKS = ("inpainting", "superres", "adapter_canny", "faceswap")
TASKS_RECORD = "tasks.json"


# ---------------------------------------------------------------------------------- text-to-image world
def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"toy-world asset {path} is missing; build it with `make toyworld`")
    return path


def teacher_dir(root: Path = ASSETS) -> Path:
    """The teacher's StableDiffusionPipeline directory."""
    return _require(root / "teacher" / "model_index.json").parent


def clip_dir(root: Path = ASSETS) -> Path:
    """The directory holding the toy CLIP's config and weights."""
    return _require(root / "clip")


def clip_weights(root: Path = ASSETS) -> Path:
    """The toy CLIP's safetensors weights (pass as ``pretrained=`` to open_clip)."""
    return _require(root / "clip" / CLIP_WEIGHTS_FILE)


def _shards(root: Path, split: str) -> list[str]:
    shards = sorted(str(p) for p in (root / "data").glob(f"{split}-*{SHARD_SUFFIX}"))
    if not shards:
        raise FileNotFoundError(f"no {split} shards under {root / 'data'}; build them with `make toyworld`")
    return shards


def train_shards(root: Path = ASSETS) -> list[str]:
    """Paths of the training shards, sorted."""
    return _shards(root, "train")


def heldout_shards(root: Path = ASSETS) -> list[str]:
    """Paths of the held-out shards, sorted."""
    return _shards(root, "heldout")


def toyworld_info(root: Path = ASSETS) -> dict:
    """The build record (``toyworld.json``): seed, split sizes, image and latent sizes, VAE scaling
    factor and the teacher's full sampling budget (``teacher_sampling``)."""
    return json.loads(_require(root / TOYWORLD_RECORD).read_text())


# ---------------------------------------------------------------------------------- task teachers
def _require_task(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"toy-world task asset {path} is missing; build it with `python -m flash_exp.toyworld.tasks "
            f"--only {what}` (after `make toyworld`)"
        )
    return path


def task_dir(task: str, root: Path = TASK_ASSETS) -> Path:
    """The toy teacher of ``task``: a diffusers pipeline directory."""
    if task not in TOY_TASKS:
        raise ValueError(f"no toy teacher for task {task!r}; known: {', '.join(TOY_TASKS)}")
    return _require_task(root / task / "model_index.json", task).parent


def faces_shards(split: str, root: Path = TASK_ASSETS) -> list[str]:
    """Paths of the synthetic faces' ``split`` shards (train, heldout), sorted."""
    shards = sorted(str(p) for p in (root / "faces").glob(f"{split}-*{SHARD_SUFFIX}"))
    if not shards:
        raise FileNotFoundError(
            f"no {split} face shards under {root / 'faces'}; build them with "
            "`python -m flash_exp.toyworld.tasks --only faceswap`"
        )
    return shards


# ---------------------------------------------------------------------------------- config resolvers
def toyworld_asset(name: str) -> Any:
    """``${toyworld:teacher}``, ``${toyworld:train_shards}``, ``heldout_shards``, ``clip``."""
    return {"teacher": lambda: str(teacher_dir()), "train_shards": train_shards,
            "heldout_shards": heldout_shards, "clip": lambda: str(clip_weights())}[name]()


def toytask_asset(name: str) -> Any:
    """``${toytask:<task>}`` a teacher directory; ``${toytask:faces_train_shards}`` / ``faces_heldout_shards``."""
    if name == "faces_train_shards":
        return faces_shards("train")
    if name == "faces_heldout_shards":
        return faces_shards("heldout")
    return str(task_dir(name))
