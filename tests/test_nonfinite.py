"""A loss that goes NaN stops the run naming step, term and phase, and saves nothing over the last good state."""

from __future__ import annotations

import pytest
import torch

from flash_exp.method.distiller import FlashDistiller
from tests.conftest import solid_samples, write_shard
from tests.fixtures_train import tiny_train_cfg


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, tiny_sd_dir, monkeypatch):
    from flash_exp.train import train

    original = FlashDistiller.generator_loss

    def nan_from_step_3(self, z, cond, null, step, generator):
        loss, logs, disc = original(self, z, cond, null, step, generator)
        if step >= 3:
            loss = loss * float("nan")
            logs = {**logs, "loss/distill": float("nan"), "loss/generator": float("nan")}
        return loss, logs, disc

    monkeypatch.setattr(FlashDistiller, "generator_loss", nan_from_step_3)
    shards = [str(write_shard(tmp_path / "a.tar", solid_samples(16)))]
    run = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"step 3, phase 'phase3'.*loss/distill=nan"):
        train(tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=4"), run)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (run / "export").exists()
