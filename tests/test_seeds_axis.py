"""The training seed as a sweep axis, `make ablation SEEDS=N`, and each experiment's reference (the
paper's choice of its axis) carried into the config and checked against the swept values."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from flash_exp.config import ConfigError, compose, validate
from flash_exp.config.reference import check_reference, check_reference_key, normalise_value

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))


def test_seed_sweeps_with_the_experiment_axis_into_distinct_jobs():
    from flash_exp.plan import sweep_jobs

    jobs = sweep_jobs(["experiment=fig5e_timesteps", "seed=0,1,2"])
    assert len(jobs) == 12
    points = {(next(o for o in job if o.startswith("timesteps=")), next(o for o in job if o.startswith("seed=")))
              for job in jobs}
    assert len(points) == 12 and {s for _, s in points} == {"seed=0", "seed=1", "seed=2"}
    cfg = compose(["experiment=fig5e_timesteps", "seed=1"], return_hydra_config=True)
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)
    assert sweep["subdir"] == "${hydra.job.num}"  # one directory per job: seeds never share one
    typed = validate(compose(["experiment=fig5e_timesteps", "seed=1", "timesteps=uniform"]))
    assert typed.seed == 1 and typed.reference == {"timesteps": "mixture"}  # the reference reaches the config
    with pytest.raises(ConfigError, match=r"reference.timestep=.*names no config key: the root has .*timesteps"):
        check_reference_key(typed, "timestep")
    with pytest.raises(ConfigError, match=r"reference.loss.adversarial.typ=.*loss.adversarial has .*type"):
        check_reference_key(typed, "loss.adversarial.typ")
    check_reference_key(typed, "loss.adversarial.type")


def test_make_ablation_seeds_expands_to_a_seed_sweep():
    def train_line(*args: str) -> str:
        out = subprocess.run(["make", "-n", "ablation", *args], cwd=REPO, capture_output=True, text=True, check=True)
        return next(line for line in out.stdout.splitlines() if "flash_exp.train -m" in line)

    assert " seed=0,1,2 " in train_line("SEEDS=3")
    assert " seed=0,1,2,3,4 " in train_line("SEEDS=5")
    assert "seed=" not in train_line()  # SEEDS=1 (the default): the runs of before, no seed override


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_each_experiment_names_the_papers_choice_among_its_swept_values(name):
    raw = OmegaConf.load(REPO / "experiments" / f"{name}.yaml")
    ((key, values),) = OmegaConf.to_container(raw.hydra.sweeper.params).items()
    swept = [normalise_value(v) for v in
             OverridesParser.create().parse_override(f"{key}={values}").sweep_string_iterator()]
    ((ref_key, ref_value),) = OmegaConf.to_container(raw.reference).items()
    assert ref_key == key and normalise_value(ref_value) in swept


def test_a_reference_outside_the_swept_values_is_refused():
    jobs = [["timesteps=uniform", "seed=0"], ["timesteps=mixture", "seed=0"]]
    check_reference({"timesteps": "mixture"}, jobs)
    check_reference({"backbone.guidance_range": "[3, 6]"}, [["backbone.guidance_range=[3,6]"],
                                                             ["backbone.guidance_range=[1,1]"]])
    with pytest.raises(ConfigError, match="reference.timesteps='paper': must be one of the swept values: uniform, "
                                          "mixture"):
        check_reference({"timesteps": "paper"}, jobs)
