"""Config composition: the paper's per-backbone values, and validation naming the offending key."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from flash_exp.config import ConfigError, validate
from tests.conftest import REPO, compose

MODE_PROBS = [[0, 0, 0.5, 0.5], [0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25], [0.4, 0.2, 0.2, 0.2]]


def test_sdxl_paper_values():
    cfg = compose(["backbone=sdxl"])
    assert cfg.backbone.lora.rank == 64 and cfg.backbone.lora.alpha == 64
    assert list(cfg.phases.k) == [32, 32, 32, 32]
    assert list(cfg.backbone.guidance_range) == [3, 13]
    assert list(cfg.loss.adversarial.weight) == [0, 0.1, 0.2, 0.3]
    assert list(cfg.loss.dmd.weight) == [0, 0.3, 0.5, 0.7]
    assert cfg.loss.adversarial.type == "lsgan"
    assert OmegaConf.to_container(cfg.timesteps.mode_probs) == MODE_PROBS
    assert cfg.backbone.null_condition == "zero" and cfg.data.batch_size == 2


def test_pixart_and_sd3_paper_values():
    pixart = compose(["backbone=pixart"])
    assert list(pixart.phases.k) == [16] * 4 and list(pixart.phases.iterations) == [5000] * 4
    assert list(pixart.backbone.guidance_range) == [2, 9]
    assert list(pixart.loss.adversarial.weight) == [0, 0.05, 0.1, 0.2]
    assert pixart.backbone.lora.alpha == 8 and pixart.backbone.lora.rank == 64
    sd3 = compose(["backbone=sd3"])
    assert list(sd3.backbone.guidance_range) == [7, 13]
    assert list(sd3.loss.adversarial.weight) == [0, 0.1, 0.3, 0.5]
    assert sd3.backbone.prediction == "flow"


@pytest.mark.parametrize(("name", "hub_id", "steps", "guidance"), [
    ("sd35", "stabilityai/stable-diffusion-3.5-medium", 40, 4.5),
    ("sd35_large", "stabilityai/stable-diffusion-3.5-large", 28, 3.5)])
def test_sd35_has_its_model_cards_sampling_and_sd3s_method(name, hub_id, steps, guidance):
    """The model cards' example calls: Medium num_inference_steps=40, guidance_scale=4.5; Large 28, 3.5;
    both at 1024 px. The method settings stay Flash SD3's."""
    cfg, sd3 = compose([f"backbone={name}"]), compose(["backbone=sd3"])
    b = cfg.backbone
    assert (b.family, b.pretrained, b.prediction, b.resolution) == ("sd3", hub_id, "flow", 1024)
    assert (b.teacher_sampling.steps, b.teacher_sampling.guidance) == (steps, guidance)
    for key in ("backbone.guidance_range", "backbone.negative_prompt", "backbone.discriminator", "phases", "loss",
                "data.batch_size"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(sd3, key), key
    assert set(b.lora.targets) == set(sd3.backbone.lora.targets) - {"proj_in"}


@pytest.mark.parametrize("name", ["sd3", "sd35", "sd35_large"])
def test_the_sd3_family_refuses_lcm_naming_the_backbone_and_family(name):
    with pytest.raises(ConfigError, match=rf"method='lcm': runs on the diffusion families sd, sdxl, pixart, not "
                                          rf"'{name}' \(family sd3\): its consistency solver .* use method=flash or "
                                          r"method=dmd2"):
        validate(compose([f"backbone={name}", "backbone.pretrained=/nonexistent", "data.shards=[x]", "method=lcm"]))


@pytest.mark.parametrize("name", ["sd3", "sd35", "sd35_large"])
def test_the_sd3_family_takes_dmd2_with_its_flow_euler_student_sampler(name):
    cfg = validate(compose([f"backbone={name}", "backbone.pretrained=/nonexistent", "data.shards=[x]", "method=dmd2"]))
    sampler = cfg.backbone.student_scheduler
    assert (cfg.method.name, sampler.name, sampler.timestep_spacing, sampler.kwargs) == (
        "dmd2", "FlowMatchEulerDiscreteScheduler", "linspace", {})
    sd15 = validate(compose(["backbone=sd15", "backbone.pretrained=/nonexistent", "data.shards=[x]", "method=dmd2"]))
    assert (sd15.backbone.student_scheduler.name, sd15.backbone.student_scheduler.kwargs) == (
        "LCMScheduler", {"original_inference_steps": 1000})


def test_a_wrong_sd35_size_names_the_backbone_options():
    with pytest.raises(ConfigError, match=r"backbone='sd35_huge'.*did you mean sd35_large\? \(its options are: "
                                          r"flux, pixart, sd15, sd3, sd35, sd35_large, sdxl, toy\)"):
        compose(["backbone=sd35_huge"])


def test_sd15_paper_values():
    cfg = compose(["backbone=sd15"])
    assert cfg.backbone.lora.rank == 128 and cfg.backbone.resolution == 512
    assert cfg.loss.distill.type == "lpips" and cfg.data.batch_size == 4


def test_axis_groups_keep_backbone_values():
    cfg = compose(["backbone=pixart", "loss=distill_only", "phases=k64"])
    assert list(cfg.phases.k) == [64] * 4
    assert list(cfg.phases.iterations) == [5000] * 4  # PixArt's, untouched by phases=k64
    assert cfg.loss.adversarial.enabled is False and cfg.loss.dmd.enabled is False
    assert list(cfg.loss.adversarial.weight) == [0, 0.05, 0.1, 0.2]


def test_every_shipped_backbone_validates():
    for name in ("toy", "sd15", "sdxl", "pixart", "sd3", "sd35", "sd35_large"):
        typed = validate(compose([f"backbone={name}", "backbone.pretrained=/nonexistent", "data.shards=[x]"]))
        assert typed.backbone.name == name


INVALID = [
    (["phases.k=[32,32]", "phases.iterations=[10,10]", "phases.names=[a,b]"], "timesteps.mode_probs"),
    (["timesteps.mode_probs=[[0.5,0.5,0.5,0.5],[0.1,0.3,0.3,0.3],[0.25,0.25,0.25,0.25],[0.4,0.2,0.2,0.2]]"],
     "timesteps.mode_probs[0]"),
    (["timesteps.mode_probs=[[0.5,0.5],[0.1,0.9],[0.5,0.5],[1.0,0.0]]"], "timesteps.mode_probs[0]"),
    (["loss.adversarial.type=bce"], "loss.adversarial.type"),
    (["loss.distill.type=ssim"], "loss.distill.type"),
    (["phases.k=[32,0,32,32]"], "phases.k[1]"),
    (["phases.k=[32,-4,32,32]"], "phases.k[1]"),
    (["backbone.guidance_range=[13,3]"], "backbone.guidance_range"),
    (["backbone.lora.rank=0"], "backbone.lora.rank"),
    (["backbone.lora.rank=-8"], "backbone.lora.rank"),
]


@pytest.mark.parametrize(("overrides", "key"), INVALID)
def test_validation_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose(["backbone=sdxl", "data.shards=[x]", *overrides]))
    assert err.value.key == key
    assert key in str(err.value)


def test_validation_lists_allowed_values():
    with pytest.raises(ConfigError, match="lsgan, hinge, vanilla, non-saturating, wgan"):
        validate(compose(["backbone.pretrained=/x", "data.shards=[x]", "loss.adversarial.type=bce"]))


@pytest.mark.parametrize(("overrides", "key"), [INVALID[0], INVALID[3], INVALID[7], INVALID[8]])
def test_cli_exits_nonzero_before_loading_weights(overrides, key, tmp_path):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "flash_exp.train", "backbone=sdxl", "data.shards=[x]", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert key in proc.stderr
    assert time.monotonic() - start < 60


def test_a_config_error_survives_pickling():
    """A sweep job's error reaches the launcher pickled (submitit): it must come back whole."""
    import pickle

    err = pickle.loads(pickle.dumps(ConfigError("trainer.devices", 2, "must equal SLURM_NTASKS_PER_NODE")))
    assert isinstance(err, ConfigError)
    assert (err.key, err.value, str(err)) == (
        "trainer.devices", 2, "invalid config value trainer.devices=2: must equal SLURM_NTASKS_PER_NODE")


@pytest.mark.parametrize(("backbone", "bounds", "allowed"), [
    ("sdxl", ["loss.dmd.max_timestep=1000"], "0 <= min <= max <= 999"),
    ("sd3", ["loss.dmd.min_timestep=0"], "1 <= min <= max <= 1000"),
    ("sd3", ["loss.dmd.min_timestep=600", "loss.dmd.max_timestep=500"], "1 <= min <= max <= 1000"),
])
def test_dmd_bounds_are_checked_against_the_teachers_training_timesteps(backbone, bounds, allowed):
    """A diffusion teacher trains on t = 0..999, a flow-matching one (SD3) on t = 1..1000."""
    with pytest.raises(ConfigError, match=allowed) as err:
        validate(compose([f"backbone={backbone}", "data.shards=[x]", *bounds]))
    assert err.value.key == "loss.dmd.min_timestep/max_timestep"
    cfg = validate(compose(["backbone=sd3", "data.shards=[x]", "loss.dmd.max_timestep=1000"]))
    assert cfg.loss.dmd.min_timestep is None and cfg.loss.dmd.max_timestep == 1000
