"""Values that used to pass validation and cost a run: each fails at composition, naming its key."""

from __future__ import annotations

import pytest

from flash_exp.config import ConfigError, validate
from tests.conftest import compose

INVALID = [
    (["data.crop_size=-5"], "data.crop_size"),
    (["data.max_consecutive_rejects=0"], "data.max_consecutive_rejects"),
    (["data.shards=[]"], "data.shards"),
    (["trainer.optim.betas=[0.9,1.5]"], "trainer.optim.betas"),
    (["trainer.optim.betas=[0.9]"], "trainer.optim.betas"),
    (["trainer.optim.weight_decay=-0.1"], "trainer.optim.weight_decay"),
    (["seed=-1"], "seed"),
    (["trainer.precision=17"], "trainer.precision"),
    (["trainer.accelerator=gpux"], "trainer.accelerator"),
    (["trainer.devices=0"], "trainer.devices"),
    (["timesteps=gaussian", "timesteps.gaussian_mean=40"], "timesteps.gaussian_mean"),
    (["timesteps=gaussian", "timesteps.gaussian_mean=-1"], "timesteps.gaussian_mean"),
    (["+trainer.foo=1"], "trainer.foo"),
    (["+foo=1"], "foo"),
]


@pytest.mark.parametrize(("overrides", "key"), INVALID)
def test_invalid_value_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose(["data.shards=[x]", *overrides]))
    assert err.value.key == key and key in str(err.value)


def test_a_config_error_exits_at_once_without_importing_the_model_stack(tmp_path):
    """Exiting within 3 s, without torch or the evaluation, and leaving nothing behind (no FAILED row)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "flash_exp.train", "data.shards=[x]",
                           "+trainer.foo=1", f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "trainer.foo" in done.stderr, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert not imported & {"torch", "lightning", "flash_exp.evaluation"}
    assert not (tmp_path / "FAILED").exists() and not (tmp_path / "eval").exists()


TEACHER_INVALID = [
    (["backbone.resolution=30"], "backbone.resolution"),
    (["phases.k=[2000,16,16,16]"], "phases.k[0]"),
    (["backbone.teacher_scheduler.name=FooScheduler"], "backbone.teacher_scheduler.name"),
    (["backbone.student_scheduler.name=LCM"], "backbone.student_scheduler.name"),
]


@pytest.mark.parametrize(("overrides", "key"), TEACHER_INVALID)
def test_values_checked_against_the_teachers_config_files(overrides, key):
    from flash_exp.backbones.preflight import check_against_pretrained
    from flash_exp.toyworld import assets

    cfg = validate(compose(["data.shards=[x]", *overrides]))
    with pytest.raises(ConfigError) as err:
        check_against_pretrained(cfg, assets.teacher_dir())
    assert err.value.key == key


def test_every_shipped_backbone_passes_the_teacher_checks():
    from flash_exp.backbones.preflight import check_against_pretrained, check_scheduler_names
    from flash_exp.toyworld import assets

    check_against_pretrained(validate(compose(["data.shards=[x]"])), assets.teacher_dir())
    for name in ("sd15", "sdxl", "pixart", "sd3"):
        check_scheduler_names(validate(compose([f"backbone={name}", "backbone.pretrained=/x", "data.shards=[x]"])))


def test_the_cli_refuses_a_resolution_the_teacher_cannot_sample_before_loading_it(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, "-m", "flash_exp.train", "backbone.resolution=30",
                           f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "backbone.resolution=30" in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()
