"""CLIP score with open_clip: the mean cosine similarity between image and caption embeddings.

The convention of DMD2 / GigaGAN / SiD-LSG and of the Flash SD model card (0.306 on COCO2017):
``cos(image_embedding, text_embedding)`` averaged over images, a number in [-1, 1] -- not x100 and
not clamped at 0. Images get the benchmark's crop-and-resize policy, then the model's own
preprocessing; captions are tokenised by the model's tokenizer (truncated to its context length),
optionally after the prefix "A photo depicts " (CLIPScore, arXiv 2104.08718; it changes the value,
so it is part of the eval spec). Weights come from a local file only: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flash_exp.config import toy_paths
from flash_exp.metrics.hashing import file_sha256
from flash_exp.metrics.images import CenterCropResize

PHOTO_PREFIX = "A photo depicts "
TOY_CLIP = "toy"
VIT_G14_HUB = "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"

Loaded = tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor], Callable[[list[str]], torch.Tensor]]


class ClipModel:
    """An open_clip model identified by name, pretrained tag and weights digest, loaded on first use.

    ``model``: the open_clip model in eval mode on ``device``; ``preprocess``: PIL image ->
    (3, S, S) float tensor; ``tokenizer``: list of N strings -> (N, context_length) token ids.
    """

    def __init__(self, name: str, tag: str, weights: Path, loader: Callable[[], Loaded],
                 memo_dir: Path | None = None) -> None:
        self.name, self.tag, self.weights = name, tag, Path(weights)
        self.weights_sha256 = file_sha256(self.weights, memo_dir)
        self._loader = loader
        self._loaded: Loaded | None = None

    def _get(self) -> Loaded:
        if self._loaded is None:
            self._loaded = self._loader()
        return self._loaded

    @property
    def model(self) -> torch.nn.Module:
        return self._get()[0]

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        return self._get()[1]

    @property
    def tokenizer(self) -> Callable[[list[str]], torch.Tensor]:
        return self._get()[2]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def image_config(self) -> dict[str, Any]:
        """The image tower's input: ``size`` (S, S) in pixels and the normalisation ``mean``/``std``."""
        cfg = self.model.visual.preprocess_cfg
        size = cfg["size"] if isinstance(cfg["size"], list | tuple) else (cfg["size"], cfg["size"])
        return {"size": tuple(size), "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}

    def describe(self) -> dict[str, str]:
        """What identifies the model in an eval spec (no local path)."""
        return {"model": self.name, "pretrained": self.tag, "weights_sha256": self.weights_sha256}


def tag_settings(name: str, tag: str) -> dict[str, Any]:
    """``create_model_and_transforms`` arguments that make a load from a file behave like a load by the
    known pretrained tag ``tag``: its preprocessing (mean, std, interpolation, resize mode) and
    QuickGELU. open_clip applies neither when ``pretrained`` is a path (open_clip #1068, #771)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)  # {} for an unknown tag
    keys = {"mean": "image_mean", "std": "image_std", "interpolation": "image_interpolation",
            "resize_mode": "image_resize_mode"}
    return {arg: cfg[key] for key, arg in keys.items() if key in cfg} | {"force_quick_gelu": cfg.get("quick_gelu", False)}


def open_clip_model(name: str, tag: str, weights: str | Path, device: str | torch.device = "cpu",
                    memo_dir: Path | None = None) -> ClipModel:
    """open_clip ``name`` with the local weights file ``weights`` (the file of pretrained tag ``tag``).

    Raises FileNotFoundError naming the path and how to get the file when it is missing.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        hint = (f" e.g. `hf download {VIT_G14_HUB} open_clip_pytorch_model.bin --local-dir {path.parent}`"
                if (name, tag) == ("ViT-g-14", "laion2b_s12b_b42k") else "")
        raise FileNotFoundError(
            f"CLIP score needs the open_clip weights of {name} ({tag}) at {path}, which does not exist; "
            f"nothing is downloaded at run time. Put the file there{hint}, or point "
            f"clip_weights.{name}=<file> (env FLASH_EXP_CLIP_WEIGHTS for ViT-g-14) at it."
        )

    def load() -> Loaded:
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=str(path), device=device, **tag_settings(name, tag))
        return model.eval(), preprocess, open_clip.get_tokenizer(name)

    return ClipModel(name, tag, path, load, memo_dir)


def toy_clip_model(clip_dir: Path | None = None, device: str | torch.device = "cpu",
                   memo_dir: Path | None = None) -> ClipModel:
    """The toy world's CLIP (:mod:`flash_exp.metrics.toy_clip`); ``clip_dir`` defaults to the shipped assets."""
    from flash_exp.metrics.toy_clip import load_toy_clip

    directory = Path(clip_dir) if clip_dir is not None else toy_paths.clip_dir()
    weights = directory / toy_paths.CLIP_WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"toy CLIP weights {weights} are missing; build them with `make toyworld`")
    return ClipModel(toy_paths.CLIP_MODEL_NAME, "toyworld", weights, lambda: load_toy_clip(directory, device=device),
                     memo_dir)


def _open_cropped(path: Path, crop: CenterCropResize) -> Image.Image:
    with Image.open(path) as image:
        return crop.pil(image)


@torch.no_grad()
def clip_scores(files: Sequence[Path], prompts: Sequence[str], clip: ClipModel, eval_res: int,
                photo_prefix: bool = False, batch_size: int = 32) -> np.ndarray:
    """Cosine similarity of each image file with its prompt: float64 array (N,), values in [-1, 1].

    ``files[i]`` is scored against ``prompts[i]``; images are cropped and resized to ``eval_res``
    (:class:`CenterCropResize`) before the model's preprocessing.
    """
    if len(files) != len(prompts):
        raise ValueError(f"{len(files)} images but {len(prompts)} prompts")
    crop = CenterCropResize(eval_res)
    prefix = PHOTO_PREFIX if photo_prefix else ""
    device = clip.device
    scores = []
    for start in range(0, len(files), batch_size):
        batch_files = files[start:start + batch_size]
        pixels = torch.stack([clip.preprocess(_open_cropped(f, crop)) for f in batch_files]).to(device)
        tokens = clip.tokenizer([prefix + p for p in prompts[start:start + batch_size]]).to(device)
        image_emb = clip.model.encode_image(pixels).float()
        text_emb = clip.model.encode_text(tokens).float()
        scores.append(F.cosine_similarity(image_emb, text_emb, dim=-1).cpu().double().numpy())
    return np.concatenate(scores) if scores else np.zeros(0)
