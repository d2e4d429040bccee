"""Checkpoint files a user can hand over: read with weights_only, corrupt files named."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import solid_samples, write_shard
from tests.fixtures_train import tiny_train_cfg


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
    from flash_exp.training.student import load_run

    marker = tmp_path / "payload-ran"
    run = run_with_checkpoint(tmp_path, tiny_sd_dir, {"state_dict": {}, "x": MakeDirectory(str(marker))})
    with pytest.raises(ValueError, match=r"last.ckpt holds pickled objects.*weights_only=True"):
        load_run(run)
    assert not marker.exists(), "the checkpoint's payload ran"


def test_resume_skips_a_corrupt_last_checkpoint_naming_it(tmp_path):
    from flash_exp.training.checkpoints import newest_intact

    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    for step in (2, 4):
        torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": step}, ckpt_dir / f"step_{step:06d}.ckpt")
    (ckpt_dir / "last.ckpt").write_bytes(b"")
    path, notes = newest_intact(ckpt_dir)
    assert path == ckpt_dir / "step_000004.ckpt"
    assert len(notes) == 1 and "last.ckpt is corrupt or truncated (an empty file)" in notes[0]
    intact = (ckpt_dir / "step_000004.ckpt").read_bytes()
    (ckpt_dir / "step_000004.ckpt").write_bytes(intact[: len(intact) // 2])  # cut: no zip directory
    path, notes = newest_intact(ckpt_dir)
    assert path == ckpt_dir / "step_000002.ckpt" and "step_000004.ckpt is corrupt or truncated" in notes[1]


def test_a_checkpoint_of_another_lora_rank_names_the_setting():
    from flash_exp.training.checkpoints import shape_mismatch

    here = {"unet.a.lora_A.default.weight": (4, 32), "unet.a.lora_B.default.weight": (32, 4)}
    other = {"unet.a.lora_A.default.weight": (8, 32), "unet.a.lora_B.default.weight": (32, 8)}
    assert shape_mismatch(here, other) == "backbone.lora.rank: the checkpoint has rank 8, this config 4"
    assert shape_mismatch(here, dict(here)) is None
    with_disc = {**here, "distiller.discriminator.net.0.weight": (64, 128, 4, 4)}
    assert shape_mismatch(here, with_disc).startswith("loss.adversarial.enabled")


def test_training_resumes_past_a_corrupt_last_ckpt_and_refuses_another_rank(tmp_path, tiny_sd_dir, caplog):
    from flash_exp.train import train

    shards = [str(write_shard(tmp_path / "a.tar", solid_samples(16)))]
    run = tmp_path / "run"
    train(tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=2"), run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    with caplog.at_level("WARNING"):
        train(tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=3"), run)
    assert "last.ckpt is corrupt or truncated" in caplog.text
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    with pytest.raises(ValueError, match="backbone.lora.rank: the checkpoint has rank 4, this config 8"):
        train(tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=4", "backbone.lora.rank=8"), run)


def test_metrics_hold_each_step_once_after_a_resume_and_the_run_ends_with_a_data_summary(tmp_path, tiny_sd_dir,
                                                                                         caplog):
    import csv
    import shutil

    from flash_exp.train import train

    shards = [str(write_shard(tmp_path / "a.tar", solid_samples(16)))]
    run = tmp_path / "run"
    train(tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=4", "trainer.log_every=1"), run)
    # the run died after step 4 was logged but before last.ckpt moved past step 2
    shutil.copyfile(run / "checkpoints" / "step_000002.ckpt", run / "checkpoints" / "last.ckpt")
    with caplog.at_level("INFO"):
        train(tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=4", "trainer.log_every=1"), run)
    with open(run / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("loss/distill")]
    assert len(steps) == len(set(steps)) and len(steps) == 4, steps
    assert "data: 0 samples skipped" in caplog.text and "shards: 0 truncated, 0 unreadable" in caplog.text


@pytest.mark.slow
def test_a_run_stopped_by_sigterm_and_relaunched_keeps_one_last_checkpoint(tmp_path, tiny_sd_dir, monkeypatch,
                                                                           unhandled_sigterms):
    import signal

    from flash_exp.train import run
    from flash_exp.training.module import FlashModule

    shards = [str(write_shard(tmp_path / "a.tar", solid_samples(8)))]
    step = FlashModule.training_step

    def sigterm_at_the_first_step(module, batch, batch_idx):
        if module.global_step == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops after this step; last.ckpt is saved
        return step(module, batch, batch_idx)

    monkeypatch.setattr(FlashModule, "training_step", sigterm_at_the_first_step)
    cfg = tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=2", "trainer.checkpoint_every=100")
    with pytest.raises(SystemExit):
        run(cfg, tmp_path / "run")
    run(cfg, tmp_path / "run")  # resumes at step 1 and ends at step 2
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["last.ckpt"]
    assert unhandled_sigterms == []
