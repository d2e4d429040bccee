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


class _Ranks:
    """Two ranks' strategy as Lightning's DDP strategy answers ``reduce_boolean_decision(all=False)``:
    true when the decision is true on any rank."""

    world_size = 2

    def __init__(self, other_rank_non_finite: bool):
        self.other = other_rank_non_finite
        self.strategy = self
        self.calls = 0

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:  # noqa: A002 (Lightning's name)
        assert all is False
        self.calls += 1
        return decision or self.other


@pytest.mark.parametrize("other_rank_non_finite", [False, True])
def test_a_nan_on_one_ddp_rank_stops_every_rank(other_rank_non_finite):
    from types import SimpleNamespace

    from flash_exp.training.module import FlashModule, NonFiniteLossError

    ranks = _Ranks(other_rank_non_finite)
    module = SimpleNamespace(_trainer=ranks, distiller=SimpleNamespace(), cfg=SimpleNamespace(method=SimpleNamespace(name="lcm")))
    module._on_any_rank = lambda decision: FlashModule._on_any_rank(module, decision)
    logs = {"loss/consistency": 0.25}
    if other_rank_non_finite:
        with pytest.raises(NonFiniteLossError, match=r"step 7 \(lcm\): on another rank \(this rank's loss: 0.25\)"):
            FlashModule.stop_if_non_finite(module, 0.25, logs, 7)
    else:
        FlashModule.stop_if_non_finite(module, 0.25, logs, 7)
    assert ranks.calls == 1  # the rank with a finite loss took part in the decision
