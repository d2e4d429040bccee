"""A signal-driven stop saves, leaves INTERRUPTED, exits non-zero; a relaunch resumes and clears it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from flash_exp.training.markers import clear_failure
from flash_exp.training.rundir import INTERRUPTED, run_state
from tests.conftest import REPO, compose


def test_sigterm_during_training_exits_nonzero_with_an_interrupted_marker(tmp_path, monkeypatch):
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    import flash_exp.train as train_module
    from flash_exp.config import validate

    def stopped(cfg, run_dir):
        raise SIGTERMException

    monkeypatch.setattr(train_module, "train", stopped)
    cfg = validate(compose(["data.shards=[x]"]))
    with pytest.raises(SystemExit) as exit_info:
        train_module.run(cfg, tmp_path)
    assert exit_info.value.code == 128 + signal.SIGTERM
    state = run_state(tmp_path)
    assert state.status == INTERRUPTED and "SIGTERM" in state.reason
    assert json.loads((tmp_path / "eval" / "status.json").read_text())["status"] == INTERRUPTED
    clear_failure(tmp_path)  # the relaunch (or SLURM's requeue) resumes: no longer interrupted
    assert (tmp_path / "INTERRUPTED.1").is_file() and run_state(tmp_path).status != INTERRUPTED
    assert not (tmp_path / "eval" / "status.json").exists()


@pytest.mark.slow
def test_sigterm_to_a_training_process_saves_and_exits_nonzero(tmp_path, tiny_sd_dir):
    from tests.conftest import solid_samples, write_shard

    shard = write_shard(tmp_path / "a.tar", solid_samples(16))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "flash_exp.train", "backbone=sd15", f"backbone.pretrained={tiny_sd_dir}",
           "backbone.resolution=32", "backbone.lora.rank=4", "backbone.lora.alpha=4",
           "backbone.teacher_sampling.steps=2", "loss.distill.type=l2", f"data.shards=[{shard}]",
           "data.batch_size=2", "data.min_aesthetic_score=null", "phases.k=[4,4,4,4]",
           "phases.iterations=[100,100,100,100]", "trainer.accelerator=cpu", "trainer.checkpoint_every=1",
           "trainer.sample_every=0", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not (run / "checkpoints" / "step_000001.ckpt").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else ""
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert (run / "checkpoints" / "last.ckpt").is_file() and not (run / "export").exists()
    assert run_state(run).status == INTERRUPTED
