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

    def stopped(cfg, run_dir, stops=None):
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


@pytest.mark.slow
def test_sigterm_in_each_phase_interrupts_the_run_and_a_relaunch_finishes_it(tmp_path, tiny_sd_dir, tiny_shards,
                                                                              monkeypatch, unhandled_sigterms):
    """The README's sentence in every phase: the fit, its final grid, the export and the evaluation.
    Each phase sends SIGTERM to this process when it starts (once), so the signal lands inside it."""
    import os

    import flash_exp.evaluation
    import flash_exp.export
    from flash_exp.train import launch
    from flash_exp.training.checkpoints import checkpoint_step
    from flash_exp.training.module import FlashModule
    from flash_exp.training.run_lock import LOCK_FILE, run_lock
    from flash_exp.training.samples import SampleGridCallback
    from tests.fixtures_train import tiny_train_overrides

    pending = {"phase": None}

    def signalled(phase, fn):
        def wrapper(*args, **kwargs):
            if pending["phase"] == phase:
                pending["phase"] = None
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(100):  # the handler runs by the next bytecode; these sleeps only leave it room
                    time.sleep(0.01)
            return fn(*args, **kwargs)
        return wrapper

    def evaluated(settings):
        result = tmp_path / "run" / "eval" / "toy" / "result.json"
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_text("{}")
        return 0

    monkeypatch.setattr(FlashModule, "training_step", signalled("fit", FlashModule.training_step))
    monkeypatch.setattr(SampleGridCallback, "on_train_end", signalled("grid", SampleGridCallback.on_train_end))
    monkeypatch.setattr(flash_exp.export, "export_student", signalled("export", flash_exp.export.export_student))
    monkeypatch.setattr(flash_exp.evaluation, "evaluate", signalled("evaluation", evaluated))
    run = tmp_path / "run"
    cfg = compose(tiny_train_overrides(tiny_sd_dir, tiny_shards, "trainer.max_steps=2", "trainer.checkpoint_every=100",
                                       "eval.after_train=true"))

    def launch_with_sigterm_in(phase):
        pending["phase"] = phase
        with run_lock(run):
            launch(cfg, run)

    for number, phase in enumerate(["fit", "grid", "export", "evaluation"], 1):
        with pytest.raises(SystemExit) as stop:
            launch_with_sigterm_in(phase)
        assert pending["phase"] is None, f"the {phase} did not run"
        assert stop.value.code == 128 + signal.SIGTERM, phase
        assert run_state(run).status == INTERRUPTED and "SIGTERM" in run_state(run).reason, phase
        assert not (run / "COMPLETE").exists() and not (run / LOCK_FILE).exists(), phase
        assert (run / "INTERRUPTED").is_file() and len(list(run.glob("INTERRUPTED.*"))) == number - 1, phase
        assert checkpoint_step(run / "checkpoints" / "last.ckpt") == (1 if phase == "fit" else 2), phase
        assert (run / "samples" / "step_000002.png").is_file() == (phase != "fit"), phase
    launch_with_sigterm_in(None)
    complete = json.loads((run / "COMPLETE").read_text())
    assert complete["steps"] == 2 and complete["results"] == ["eval/toy/result.json"]
    assert not (run / "INTERRUPTED").exists() and not (run / LOCK_FILE).exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert unhandled_sigterms == []  # every signal was the run's


def test_stop_signals_raise_outside_the_fit_and_wait_for_its_end_inside_it(unhandled_sigterms):
    import os

    from flash_exp.train import interruption
    from flash_exp.training.run_signals import RunInterrupted, StopSignals

    stops = StopSignals()
    with pytest.raises(RunInterrupted) as stopped, stops.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # interrupted by the handler
    assert stopped.value.signum == signal.SIGINT and interruption(stopped.value) == ("SIGINT", 130)

    stops = StopSignals()
    with pytest.raises(RunInterrupted) as stopped, stops.installed():
        with stops.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
            noted = stops.received  # noted, not raised: the fit stops at its step boundary
        raise AssertionError("the end of the fit did not raise")
    assert noted == signal.SIGTERM and stopped.value.signum == signal.SIGTERM

    stops = StopSignals()
    with pytest.raises(KeyboardInterrupt), stops.installed(), stops.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C does not wait
        time.sleep(1)
    # Lightning ends a fit stopped by KeyboardInterrupt with exit code 1; the signal noted names the code
    assert interruption(SystemExit(1), stops.received) == ("SIGINT", 130)
    assert unhandled_sigterms == [] and signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_ctrl_c_during_the_fit_stops_at_the_step_boundary_after_saving_last_ckpt(tmp_path, tiny_sd_dir, tiny_shards,
                                                                                  monkeypatch):
    import os

    from flash_exp.train import run
    from flash_exp.training.checkpoints import checkpoint_step
    from flash_exp.training.module import FlashModule
    from tests.fixtures_train import tiny_train_cfg

    step = FlashModule.training_step

    def ctrl_c_at_the_first_step(module, batch, batch_idx):
        if module.global_step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return step(module, batch, batch_idx)

    monkeypatch.setattr(FlashModule, "training_step", ctrl_c_at_the_first_step)
    cfg = tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=3", "trainer.checkpoint_every=100")
    with pytest.raises(SystemExit) as stop:
        run(cfg, tmp_path / "run")
    assert stop.value.code == 128 + signal.SIGINT
    assert checkpoint_step(tmp_path / "run" / "checkpoints" / "last.ckpt") == 1
    assert run_state(tmp_path / "run").status == INTERRUPTED and "SIGINT" in run_state(tmp_path / "run").reason
