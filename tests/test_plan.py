"""``python -m flash_exp.plan``: the jobs of a sweep and their cost, before anything is launched."""

from __future__ import annotations

import pytest

from flash_exp import plan
from flash_exp.config import validate
from tests.conftest import compose


@pytest.fixture(autouse=True)
def _resolvers():
    from flash_exp.config import register_configs, register_resolvers

    register_configs()
    register_resolvers()


def test_a_sweep_plans_one_row_per_point_and_a_total(capsys):
    assert plan.main(["experiment=fig5d_losses", "backbone=sd15"]) == 0
    out = capsys.readouterr().out
    for value in ("distill_only", "distill_gan", "distill_dmd", "paper"):
        assert f"loss={value}" in out
    assert "total: 4 job(s)" in out and "FLOP-based estimate" in out


def test_sd35_plans_are_labelled_estimates_that_grow_with_the_transformer(capsys):
    """SD3.5 Medium (2.24 B transformer parameters + 13 image-only attentions) costs more than SD3 Medium
    (2.03 B), Large (8.06 B) more than both; no full-size measurement of them exists, so each is a FLOP
    estimate and says so."""
    hours = {}
    for backbone in ("sd3", "sd35", "sd35_large"):
        assert plan.main([f"backbone={backbone}"]) == 0
        out = capsys.readouterr().out
        assert "FLOP-based estimate (not measured)" in out
        hours[backbone] = float(out.split("data batches, ")[1].split(" GPU-hours")[0])
    assert hours["sd3"] < hours["sd35"] < hours["sd35_large"]
    assert hours["sd35_large"] / hours["sd3"] == pytest.approx(8.06 / 2.03, rel=0.1)  # 2 x parameters x tokens


def test_a_command_line_list_replaces_the_file_list(capsys):
    assert plan.main(["-m", "experiment=fig5h_k", "phases=k8,k16"]) == 0
    out = capsys.readouterr().out
    assert "total: 2 job(s)" in out and "phases=k32" not in out


def test_uniform_pi_costs_the_mean_rollout_length():
    cfg = validate(compose(["timesteps=uniform", "phases=k16"]))
    # a start index i drawn uniformly from 0..K-1 leaves K - i steps: (K + 1) / 2 on average
    assert plan.expected_rollout_calls(cfg, 0) == pytest.approx(17 / 2)


def test_a_bad_value_is_a_config_error(capsys):
    assert plan.main(["loss.adversarial.type=bce"]) == 2
    assert "loss.adversarial.type" in capsys.readouterr().err


def _job(*overrides: str) -> plan.JobPlan:
    return plan.plan_job(list(overrides), validate(compose(list(overrides))), "h100")


def test_each_method_has_its_own_teacher_cost_per_batch():
    budget = ["phases.iterations=[5,5,5,5]", "phases=k16", "timesteps=uniform"]
    flash, lcm, dmd2 = (_job(f"method={m}", *budget) for m in ("flash", "lcm", "dmd2"))
    # Flash: 2 (K + 1) / 2 for the rollout under a uniform pi, + 2 feature passes of the GAN (its
    # discriminator trains in the warm-up phase), + 2 for the DMD real score from phase 1 on
    assert [p.teacher_evals for p in flash.phases] == pytest.approx([17 + 2, 17 + 2 + 2, 17 + 2 + 2, 17 + 2 + 2])
    assert [p.k for p in flash.phases] == [16] * 4
    # LCM: one DDIM step of the teacher with CFG (2B samples) per batch, whatever K and pi
    assert [p.teacher_evals for p in lcm.phases] == [2.0] * 4 and lcm.teacher_evals == 2.0
    # DMD2: one CFG call on the generator turns, steps 0, 5, 10, 15 of 20 (fake_updates = 5)
    assert dmd2.teacher_evals == pytest.approx(2 * 4 / 20)
    assert _job("method=dmd2", "method.dmd2.fake_updates=3", *budget).teacher_evals == pytest.approx(2 * 7 / 20)
    assert lcm.seconds_per_batch < flash.seconds_per_batch


@pytest.mark.parametrize("method", ["lcm", "dmd2"])
def test_the_planned_teacher_evaluations_are_what_training_counts(tiny_sd_dir, method):
    import torch

    from flash_exp.backbones import build_backbone
    from flash_exp.method import build_distiller
    from tests.fixtures_train import tiny_train_cfg

    cfg = tiny_train_cfg(tiny_sd_dir, ["unused"], f"method={method}", "phases.iterations=[3,2,2,1]",
                         *(["method.dmd2.gan=false"] if method == "dmd2" else []),
                         "backbone.discriminator.head=generic", "backbone.discriminator.channels=[16,32]")
    backbone = build_backbone(cfg.backbone)
    distiller = build_distiller(backbone, cfg)
    b = cfg.data.batch_size
    z = torch.randn(b, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    cond, null = backbone.encode_prompts(["a red circle"] * b), backbone.null_condition(b)
    generator, counted = torch.Generator().manual_seed(1), []
    for step in range(sum(cfg.phases.iterations)):
        before = backbone.teacher_samples
        distiller.train_step(z, cond, null, step, generator, lambda index, loss, logs: None)
        counted.append((backbone.teacher_samples - before) / b)  # as cost/teacher_evals_per_batch counts
    assert plan.plan_job([], cfg, "h100").teacher_evals == pytest.approx(sum(counted) / len(counted))


def test_a_sweep_without_an_experiment_file_plans_each_value(capsys):
    assert plan.main(["backbone=sd15", "seed=0,1,2"]) == 0
    out = capsys.readouterr().out
    assert "total: 3 job(s)" in out and all(f"seed={s}" in out for s in range(3))
