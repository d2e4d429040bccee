"""Where the shipped toy-world assets live (built by ``python -m flash_exp.toyworld``).

Layout under :data:`ASSETS`::

    toyworld.json                      build record: seed, sizes, VAE scaling factor, teacher sampling budget
    data/train-000000.tar.gz ...       training shards (jpg + json{caption, aesthetic_score})
    data/heldout-000000.tar.gz ...     held-out shards, same format
    teacher/                           a diffusers StableDiffusionPipeline directory
    clip/toy-clip.json                 open_clip model config of "toy-clip"
    clip/open_clip_model.safetensors   its weights
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
INFO_FILE = "toyworld.json"
SHARD_SUFFIX = ".tar.gz"


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
    from flash_exp.toyworld.clip import WEIGHTS_FILE

    return _require(root / "clip" / WEIGHTS_FILE)


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


def info(root: Path = ASSETS) -> dict:
    """The build record (``toyworld.json``): seed, split sizes, image and latent sizes, VAE scaling
    factor and the teacher's full sampling budget (``teacher_sampling``)."""
    return json.loads(_require(root / INFO_FILE).read_text())
