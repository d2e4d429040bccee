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
    from flash_exp.config import toy_paths
    from flash_exp.training.preflight import check_against_pretrained

    cfg = validate(compose(["data.shards=[x]", *overrides]))
    with pytest.raises(ConfigError) as err:
        check_against_pretrained(cfg, toy_paths.teacher_dir())
    assert err.value.key == key


def test_every_shipped_backbone_passes_the_teacher_checks():
    from flash_exp.config import toy_paths
    from flash_exp.training.preflight import check_against_pretrained, check_scheduler_names

    check_against_pretrained(validate(compose(["data.shards=[x]"])), toy_paths.teacher_dir())
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


# ------------------------------------------------------------- denoiser modules and files, before any weight loads
@pytest.fixture
def no_weights_read(monkeypatch):
    """Every way a weight file is read (safetensors, torch.load, diffusers and transformers
    ``from_pretrained``) raises instead."""
    import diffusers
    import safetensors
    import safetensors.torch
    import torch
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a weight file was read")

    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(refuse))


def tiny_sd_cfg(tiny_sd_dir, *overrides):
    return validate(compose(["backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32",
                             "loss.distill.type=l2", "data.shards=[x]", *overrides]))


@pytest.mark.parametrize(("targets", "example"), [("[to_q,to_qq]", None), ("[to_qq]", "to_q"),
                                                  ("[to_q,to_out]", "to_out.0")])
def test_lora_targets_are_layers_of_the_teachers_denoiser(tiny_sd_dir, no_weights_read, caplog, targets, example):
    """A target matching nothing beside others that match is what peft ignores (a warning); none that
    matches, or one that matches a whole block, is an error naming the key and real layer names."""
    from flash_exp.training.preflight import check_against_pretrained

    cfg = tiny_sd_cfg(tiny_sd_dir, f"backbone.lora.targets={targets}")
    if example is None:
        check_against_pretrained(cfg, tiny_sd_dir)
        assert "backbone.lora.targets: no module of the teacher's UNet2DConditionModel matches to_qq" in caplog.text
        return
    with pytest.raises(ConfigError) as err:
        check_against_pretrained(cfg, tiny_sd_dir)
    assert err.value.key == "backbone.lora.targets" and targets.strip("[]").split(",")[-1] in str(err.value)
    assert example in str(err.value).split("e.g.")[-1]


def test_the_discriminator_feature_module_is_a_module_of_the_teachers_denoiser(tiny_sd_dir, no_weights_read):
    from flash_exp.training.preflight import check_against_pretrained

    with pytest.raises(ConfigError) as err:
        check_against_pretrained(tiny_sd_cfg(tiny_sd_dir, "backbone.discriminator.feature_module=mid_blok"), tiny_sd_dir)
    assert err.value.key == "backbone.discriminator.feature_module" and "mid_blok" in str(err.value)
    assert "mid_block" in str(err.value).split("e.g.")[-1]
    # no discriminator reads it: not checked
    check_against_pretrained(tiny_sd_cfg(tiny_sd_dir, "backbone.discriminator.feature_module=mid_blok",
                                         "backbone.discriminator.input=output"), tiny_sd_dir)


def test_lpips_without_its_vgg16_weights_file(tiny_sd_dir, no_weights_read, tmp_path, monkeypatch):
    from flash_exp.training.preflight import check_against_pretrained

    missing = tmp_path / "no-vgg16.pth"
    with pytest.raises(ConfigError) as err:
        check_against_pretrained(tiny_sd_cfg(tiny_sd_dir, "loss.distill.type=lpips",
                                             f"loss.distill.lpips_weights={missing}"), tiny_sd_dir)
    assert err.value.key == "loss.distill.lpips_weights" and str(missing) in str(err.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # the default: torchvision's cache file
    with pytest.raises(ConfigError) as err:
        check_against_pretrained(tiny_sd_cfg(tiny_sd_dir, "loss.distill.type=lpips"), tiny_sd_dir)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth") in str(err.value)
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"weights")
    check_against_pretrained(tiny_sd_cfg(tiny_sd_dir, "loss.distill.type=lpips"), tiny_sd_dir)


def _folder(root, images: dict[str, bytes]):
    root.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (root / name).write_bytes(data)
        (root / name).with_suffix(".txt").write_text(f"a caption of {name}")
    return root


@pytest.mark.parametrize(("case", "expected"), [
    ("head", "invalid config value backbone.discriminator.head='flash_strided': with channels [64, 128] needs "
             "features larger than the 4x4 of mid_block at backbone.resolution=32; use "
             "backbone.discriminator.head=generic"),
    ("empty", "data.root="),
    ("all bad", "data.root="),
])
def test_what_cannot_fit_fails_before_the_teacher_loads_with_one_line_and_exit_2(tmp_path, case, expected):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    runs = tmp_path / "runs"
    args = {"head": ["backbone.discriminator.head=flash_strided"],
            "empty": ["data=folder", f"data.root={_folder(tmp_path / 'empty', {})}"],
            "all bad": ["data=folder", f"data.root={_folder(tmp_path / 'bad', {'a.png': b'not a png', 'b.jpg': b''})}"]}
    env = {**os.environ, "FLASH_EXP_RUNS": str(runs), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "flash_exp.train", *args[case]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "data.shards" not in proc.stderr
    if case != "head":
        assert "no usable image among its 2 (2 undecodable image)" in errors[0] if case == "all bad" else \
            "holds no image" in errors[0]
    assert not runs.exists() or not any(runs.rglob("FAILED")), sorted(runs.rglob("*"))
    assert not runs.exists() or not any(p.is_file() for p in runs.rglob("*")), sorted(runs.rglob("*"))
