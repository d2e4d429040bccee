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
