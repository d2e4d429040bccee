"""The shipped toy CLIP ("toy-clip"), a tiny open_clip model, registered with open_clip and loaded.

It works on 32x32 images (its preprocess resizes and centre-crops any PIL image to 32x32) and uses
open_clip's standard BPE tokenizer (context 16 tokens). It is trained by ``flash_exp.toyworld.clip``;
this module only reads the files that training wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import open_clip
import torch

from flash_exp.config import toy_paths


def register(config_path: Path) -> None:
    """Register the "toy-clip" architecture from ``config_path`` (``toy-clip.json``) with open_clip."""
    if not config_path.is_file():
        raise FileNotFoundError(f"toy CLIP config {config_path} is missing; run `make toyworld`")
    open_clip.add_model_config(config_path)


def load_toy_clip(
    clip_dir: Path | None = None, device: str | torch.device = "cpu"
) -> tuple[open_clip.CLIP, Callable, Callable]:
    """Load the trained toy CLIP: ``(model, preprocess, tokenizer)``, model in eval mode.

    ``preprocess`` maps a PIL image of any size to a (3, 32, 32) float tensor; ``tokenizer`` maps a
    list of strings to (N, 16) token ids. ``clip_dir`` defaults to the shipped assets.
    """
    if clip_dir is None:
        clip_dir = toy_paths.clip_dir()
    register(clip_dir / toy_paths.CLIP_CONFIG_FILE)
    weights = clip_dir / toy_paths.CLIP_WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"toy CLIP weights {weights} are missing; run `make toyworld`")
    name = toy_paths.CLIP_MODEL_NAME
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(weights), device=device)
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(name)
