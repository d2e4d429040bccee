"""Read toy-world shards back into memory for training the toy models."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import webdataset as wds


@dataclass
class ToyData:
    """A whole split in memory.

    ``images``: uint8 tensor (N, 3, 32, 32), RGB in [0, 255]; ``captions``: N strings;
    ``aesthetic_scores``: float tensor (N,).
    """

    images: torch.Tensor
    captions: list[str]
    aesthetic_scores: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)

    def pixels(self, index: torch.Tensor) -> torch.Tensor:
        """Images ``index`` as float32 in [-1, 1], shape (len(index), 3, 32, 32)."""
        return self.images[index].float().div(127.5).sub(1.0)


def load_shards(urls: Sequence[str]) -> ToyData:
    """Decode every sample of ``urls`` (in order) into a :class:`ToyData`."""
    dataset = wds.WebDataset(list(urls), shardshuffle=False).decode("rgb8").to_tuple("jpg", "json")
    images, captions, scores = [], [], []
    for image, meta in dataset:
        images.append(np.ascontiguousarray(image.transpose(2, 0, 1)))
        captions.append(meta["caption"])
        scores.append(meta["aesthetic_score"])
    return ToyData(
        images=torch.from_numpy(np.stack(images)),
        captions=captions,
        aesthetic_scores=torch.tensor(scores, dtype=torch.float32),
    )
