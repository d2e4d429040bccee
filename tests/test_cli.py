"""The command line as a user meets it: experiment and debug presets, trackers, config errors."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flash_exp.config import ConfigError, validate
from flash_exp.training.overrides import normalise_overrides
from tests.conftest import REPO, compose


def train_cli(args: list[str], runs: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLASH_EXP_RUNS": str(runs), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "flash_exp.train", *args], cwd=runs.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_experiment_without_plus_is_the_sweep_of_its_file():
    cfg = compose(["experiment=fig5d_losses"])
    assert cfg.eval.after_train is True
    assert validate(cfg).eval.after_train


def test_plus_experiment_still_works_on_the_command_line():
    assert normalise_overrides(["+experiment=fig5d_losses", "++debug=fast", "+eval.settings.device=cpu"]) == [
        "experiment=fig5d_losses", "debug=fast", "+eval.settings.device=cpu"]


def test_debug_presets_compose_and_validate():
    fast = validate(compose(["debug=fast"]))
    overfit = validate(compose(["debug=overfit"]))
    assert fast.eval.after_train is False and overfit.data.overfit_batches == 1


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is not None, reason="mlflow is installed")
def test_mlflow_logger_without_mlflow_fails_at_validation():
    with pytest.raises(ConfigError, match="pip install mlflow"):
        validate(compose(["logger=mlflow"]))


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_wandb_logger_without_wandb_fails_at_validation():
    with pytest.raises(ConfigError, match="pip install wandb"):
        validate(compose(["logger=wandb"]))


def test_a_typo_prints_once_exits_2_and_leaves_no_directory(tmp_path):
    runs = tmp_path / "runs"
    proc = train_cli(["loss.adversarial.type=bce"], runs)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("loss.adversarial.type='bce'") == 1, proc.stderr
    assert not runs.exists(), sorted(runs.rglob("*"))


@pytest.mark.slow
def test_debug_fast_finishes(tmp_path):
    runs = tmp_path / "runs"
    # smaller still than the preset, to keep the suite fast: the test is that the preset runs through
    proc = train_cli(["debug=fast", "trainer.max_steps=2", "data.batch_size=2", "trainer.sample_nfe=[1]",
                      "backbone.teacher_sampling.steps=2", "trainer.num_sample_prompts=1"], runs)
    assert proc.returncode == 0, proc.stderr[-3000:]
    exports = list((runs / "debug").glob("*/*/export"))
    assert len(exports) == 1 and any(exports[0].glob("*.safetensors"))


def test_the_old_wandb_switch_points_to_the_logger_group():
    with pytest.raises(ConfigError, match="logger=wandb"):
        validate(compose(["trainer.wandb=true"]))


def entry_point(module: str, args: list[str], runs: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "FLASH_EXP_RUNS": str(runs), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=runs.parent, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize(("module", "args", "expected"), [
    ("flash_exp.train", ["loss.adversarial.typ=lsgan"], "did you mean loss.adversarial.type?"),
    ("flash_exp.train", ["-m", "backbone=sd15,sd16"], "did you mean sd15? (its options are: flux, pixart, sd15, sd3, sd35, sd35_large, sdxl, toy)"),
    ("flash_exp.plan", ["experiment=methods", "loss.adversarial.typ=lsgan"], "did you mean loss.adversarial.type?"),
    ("flash_exp.plan", ["experiment=nope"], "its options are: fig5c_guidance, "),
    ("flash_exp.prefetch", ["--dry-run", "loss.adversarial.typ=lsgan"], "did you mean loss.adversarial.type?"),
    ("flash_exp.prefetch", ["--dry-run", "backbone=sd16"], "did you mean sd15?"),
    ("flash_exp.evaluate", ["run_dir=absent", "studnt_nfe=[1]"], "did you mean student_nfe?"),
    ("flash_exp.sample", ["export=absent", "nfee=2"], "did you mean nfe?"),
    ("flash_exp.export", ["run_dir=absent", "chekpoint=last"], "did you mean checkpoint?"),
    ("flash_exp.data.cache_latents", ["--out", "absent", "trainer.max_step=3"], "did you mean trainer.max_steps?"),
])
def test_a_mistyped_key_or_option_is_one_line_with_the_closest_name_and_exit_2(tmp_path, module, args, expected):
    runs = tmp_path / "runs"
    proc = entry_point(module, args, runs)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr[-3000:]
    assert "+loss" not in proc.stderr and "Traceback" not in proc.stderr
    assert not runs.exists() and not (tmp_path / "absent").exists(), sorted(tmp_path.rglob("*"))
