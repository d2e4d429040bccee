"""A run's files over its life: pruned checkpoints, and a finished run that a relaunch skips."""

from __future__ import annotations

import pytest

from flash_exp.train import run
from tests.fixtures_train import tiny_train_cfg

pytestmark = pytest.mark.slow


def test_keep_checkpoints_keeps_the_latest_two_and_last(tmp_path, tiny_sd_dir, tiny_shards):
    cfg = tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=4", "trainer.checkpoint_every=1",
                         "trainer.keep_checkpoints=2")
    run(cfg, tmp_path / "run")
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt"))
    assert len(names) == 3 and "last.ckpt" in names, names


def test_a_finished_run_is_skipped_without_reading_any_weights(tmp_path, tiny_sd_dir, tiny_shards, monkeypatch,
                                                               caplog):
    import diffusers
    import safetensors.torch
    import torch

    run_dir = tmp_path / "run"
    cfg = tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=2")
    run(cfg, run_dir)

    def no_weights(*args, **kwargs):
        raise AssertionError("weights were read")

    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", no_weights)
    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", no_weights)
    monkeypatch.setattr(torch, "load", no_weights)
    monkeypatch.setattr(safetensors.torch, "load_file", no_weights)
    with caplog.at_level("INFO", logger="flash_exp.train"):
        run(cfg, run_dir)
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 1

    longer = tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=3")
    with pytest.raises(AssertionError, match="weights were read"):  # a changed config runs again
        run(longer, run_dir)


def test_an_overfit_run_trains_on_one_repeated_batch_and_its_grid_reaches_tensorboard(tmp_path, tiny_sd_dir,
                                                                                       tiny_shards):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from flash_exp.training.datamodule import FlashDataModule, RepeatedBatches

    cfg = tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=3", "data.overfit_batches=1")
    loader = FlashDataModule(cfg).train_dataloader()
    assert isinstance(loader.dataset, RepeatedBatches)
    first, second = [batch for _, batch in zip(range(2), loader, strict=False)]
    assert first["captions"] == second["captions"] and (first["pixels"] == second["pixels"]).all()
    run(cfg, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert "samples" in events.Tags()["images"]
