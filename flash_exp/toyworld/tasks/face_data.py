"""The synthetic faces of the face-swap teacher: written as shards (``faces/``, see
:mod:`flash_exp.toyworld.faces`) and read back as tensors with their face-box masks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from flash_exp.config import toy_paths
from flash_exp.data.shard_writer import write_shards
from flash_exp.toyworld.faces import iter_face_samples
from flash_exp.toyworld.tasks.settings import FACE_SHARD_SIZE, TaskBuildSettings


@dataclass
class FaceData:
    """Synthetic faces as tensors: target, identity reference, face-box mask and caption per sample."""

    targets: torch.Tensor  # (N, 3, 32, 32) in [-1, 1]
    references: torch.Tensor
    masks: torch.Tensor  # (N, 1, 32, 32)
    captions: list[str]


def build_faces(out: Path, settings: TaskBuildSettings, seed: int) -> None:
    """Write the train and held-out face shards into ``<out>/faces`` (replacing earlier ones)."""
    directory = out / "faces"
    for split, count in (("train", settings.face_train_count), ("heldout", settings.face_heldout_count)):
        for old in directory.glob(f"{split}-*{toy_paths.SHARD_SUFFIX}"):
            old.unlink()
        write_shards(iter_face_samples(seed, split, count), str(directory / f"{split}-%06d{toy_paths.SHARD_SUFFIX}"),
                     FACE_SHARD_SIZE)


def load_faces(shards: list[str], margin: float = 0.1) -> FaceData:
    """Every sample of ``shards``, pixels in [-1, 1], the mask the face box grown by ``margin``."""
    import webdataset as wds

    from flash_exp.tasks.faceswap import face_box_mask

    rows = wds.WebDataset(shards, shardshuffle=False).decode("torchrgb").to_tuple("jpg", "ref.jpg", "json")
    targets, refs, masks, captions = [], [], [], []
    for target, ref, meta in rows:
        targets.append(target * 2 - 1)
        refs.append(ref * 2 - 1)
        masks.append(face_box_mask(meta["face_box"], target.shape[-1], margin))
        captions.append(meta["caption"])
    return FaceData(torch.stack(targets), torch.stack(refs), torch.stack(masks), captions)
