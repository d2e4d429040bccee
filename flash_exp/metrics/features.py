"""FID feature extractors, handed to clean-fid as its feature model.

clean-fid calls the extractor on float tensors (N, 3, S, S) with values in [0, 255] (after its
"clean" resize to S = ``input_size``) and expects (N, D) features back. Two kinds:

* the TorchScript Inception-v3 of clean-fid/StyleGAN2-ADA (``inception-2015-12-05.pt``, D = 2048,
  S = 299), loaded from a local file by clean-fid's own ``InceptionV3W`` with downloads disabled;
* a CLIP image tower (the toy benchmark: the toy CLIP; S = its image size, D = its embedding size).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flash_exp.metrics.clip_score import ClipModel
from flash_exp.metrics.hashing import file_sha256

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_SIZE = 299


@dataclass
class FeatureExtractor:
    """A feature model for clean-fid: ``module`` (on ``device``) maps (N, 3, S, S) in [0, 255] to (N, D)."""

    name: str
    module: nn.Module
    input_size: int
    weights_sha256: str
    device: torch.device

    def describe(self) -> dict[str, object]:
        """What identifies the extractor in an eval spec (no local path)."""
        return {"name": self.name, "input_size": self.input_size, "weights_sha256": self.weights_sha256}


def load_inception(path: str | Path, device: str | torch.device = "cpu",
                   memo_dir: Path | None = None) -> FeatureExtractor:
    """clean-fid's ``InceptionV3W`` on the local TorchScript file ``path`` (never downloaded).

    Raises FileNotFoundError naming the path, the file's URL and the config key when it is missing.
    """
    from cleanfid.inception_torchscript import InceptionV3W

    path = Path(path).expanduser()
    if path.name != INCEPTION_FILE or not path.is_file():
        raise FileNotFoundError(
            f"FID needs clean-fid's Inception weights at {path}, which "
            f"{'is not named ' + INCEPTION_FILE if path.name != INCEPTION_FILE else 'does not exist'}; "
            f"nothing is downloaded at run time. Download {INCEPTION_URL} on a machine with network, "
            f"copy it to {path.parent / INCEPTION_FILE}, or point inception=<dir>/{INCEPTION_FILE} "
            f"(env FLASH_EXP_INCEPTION) at it."
        )
    module = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()
    return FeatureExtractor("inception-2015-12-05", module, INCEPTION_SIZE, file_sha256(path, memo_dir),
                            torch.device(device))


class ClipImageTower(nn.Module):
    """A CLIP image encoder on clean-fid's input: (N, 3, S, S) in [0, 255] -> (N, embed_dim) embeddings
    (not normalised), after the model's mean/std normalisation."""

    def __init__(self, clip: ClipModel) -> None:
        super().__init__()
        cfg = clip.image_config()
        self.model = clip.model
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1).to(clip.device) * 255.0)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1).to(clip.device) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image((x - self.mean) / self.std).float()


def clip_image_extractor(clip: ClipModel) -> FeatureExtractor:
    """The image tower of ``clip`` as a FID feature extractor (input size: the tower's own)."""
    size = clip.image_config()["size"]
    if size[0] != size[1]:
        raise ValueError(f"{clip.name}: a square image input is needed for FID features, got {size}")
    return FeatureExtractor(f"clip-image:{clip.name}", ClipImageTower(clip).eval(), int(size[0]),
                            clip.weights_sha256, clip.device)
