"""Checkpoint files a user can hand over: read with weights_only, corrupt files named."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import solid_samples, write_shard
from tests.test_train import tiny_train_cfg


class MakeDirectory:
    """A pickled payload: unpickling it calls os.mkdir."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def run_with_checkpoint(tmp_path, tiny_sd_dir, checkpoint: dict):
    """A run directory holding a tiny config and ``checkpoints/last.ckpt`` = ``checkpoint``."""
    shards = [str(write_shard(tmp_path / "a.tar", solid_samples(4)))]
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.structured(tiny_train_cfg(tiny_sd_dir, shards)), run / ".hydra" / "config.yaml")
    (run / "checkpoints").mkdir()
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    return run


def test_export_refuses_a_checkpoint_carrying_a_pickled_payload(tmp_path, tiny_sd_dir):
    from flash_exp.export import load_run

    marker = tmp_path / "payload-ran"
    run = run_with_checkpoint(tmp_path, tiny_sd_dir, {"state_dict": {}, "x": MakeDirectory(str(marker))})
    with pytest.raises(ValueError, match=r"last.ckpt holds pickled objects.*weights_only=True"):
        load_run(run)
    assert not marker.exists(), "the checkpoint's payload ran"
