"""The method's math against independent computations (paper-facts §3b, §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flash_exp.backbones.noise_schedule import NoiseSchedule
from flash_exp.config import validate
from flash_exp.method.boundary import boundary_condition_scalings
from flash_exp.method.phases import PhaseSchedule
from flash_exp.method.timesteps import (
    mixture_distribution,
    mode_indices,
    sample_indices,
    timestep_distribution,
)
from tests.conftest import compose

MODE_PROBS = [[0, 0, 0.5, 0.5], [0.1, 0.3, 0.3, 0.3], [0.25, 0.25, 0.25, 0.25], [0.4, 0.2, 0.2, 0.2]]


# ------------------------------------------------------------------ timestep distribution
def test_mode_indices_k32_and_k16():
    assert mode_indices(32, 4) == [0, 8, 16, 24]
    assert mode_indices(16, 4) == [0, 4, 8, 12]


@pytest.mark.parametrize(
    ("phase", "expected"),
    [(0, [0.0, 0.0, 0.393, 0.393]), (1, [0.080, 0.239, 0.239, 0.239]),
     (2, [0.202, 0.202, 0.202, 0.202]), (3, [0.329, 0.164, 0.164, 0.164])],
)
def test_mixture_masses_match_paper_facts(phase, expected):
    p = mixture_distribution(32, MODE_PROBS[phase], 0.5)
    masses = [round(float(p[i]), 3) for i in (0, 8, 16, 24)]
    assert masses == expected
    # independent numpy computation of the same unnormalised mixture
    i = np.arange(32)[:, None]
    ref = (np.array(MODE_PROBS[phase]) * np.exp(-((i - np.array([0, 8, 16, 24])) ** 2) / 0.5)).sum(1)
    np.testing.assert_allclose(p.numpy(), ref / ref.sum(), rtol=1e-12)


def test_other_distributions_sum_to_one_and_have_expected_support():
    modes = timestep_distribution("modes", 32, MODE_PROBS[3], 0.5)
    assert modes.nonzero().flatten().tolist() == [0, 8, 16, 24]
    assert math.isclose(float(modes[0]), 0.4)
    uniform = timestep_distribution("uniform", 32, MODE_PROBS[0], 0.5)
    assert torch.allclose(uniform, torch.full((32,), 1 / 32, dtype=torch.float64))
    gauss = timestep_distribution("gaussian", 32, MODE_PROBS[0], 0.5)
    assert int(gauss.argmax()) == 16 and math.isclose(float(gauss.sum()), 1.0)


def test_sample_indices_per_batch_and_per_sample():
    probs = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    shared = sample_indices(probs, 8, per_sample=False, generator=g)
    assert shared.shape == (8,) and len(shared.unique()) == 1
    draws = torch.cat([sample_indices(probs, 64, per_sample=True, generator=g) for _ in range(20)])
    assert len(draws.unique()) == 4
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.05)


def test_phase_schedule_boundaries_count_batches():
    cfg = validate(compose(["backbone=sd15", "backbone.pretrained=/x", "data.shards=[x]",
                            "phases.k=[8,16,32,64]", "phases.iterations=[2,3,4,5]"]))
    schedule = PhaseSchedule.from_config(cfg.phases, cfg.loss, cfg.timesteps, cfg.backbone.guidance_range)
    names = [schedule.at(s).name for s in range(16)]
    assert names == ["warmup"] * 2 + ["phase1"] * 3 + ["phase2"] * 4 + ["phase3"] * 7
    assert [schedule.at(s).k for s in (0, 2, 5, 9)] == [8, 16, 32, 64]
    assert schedule.at(0).adversarial_weight == 0.0 and schedule.at(9).dmd_weight == 0.7
    assert schedule.total_steps == 14


# ------------------------------------------------------------------ noise schedule
def sd_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


@pytest.mark.parametrize("t", [10, 250, 500, 750, 998])
def test_noising_equals_closed_form_off_the_k_schedule(t):
    ac = sd_alphas_cumprod()
    schedule = NoiseSchedule("epsilon", ac)
    x0, eps = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    tt = torch.full((2,), t)
    expected = ac[t].sqrt().float() * x0 + (1 - ac[t]).sqrt().float() * eps
    torch.testing.assert_close(schedule.add_noise(x0, eps, tt), expected)


def test_k_step_scheduler_add_noise_would_collapse_the_noise_level():
    """The defect avoided (paper-facts §6.2): a 32-step DPM-Solver snaps t=250 to its last timestep."""
    from diffusers import DPMSolverMultistepScheduler

    sched = DPMSolverMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        timestep_spacing="trailing")
    sched.set_timesteps(32)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    snapped = sched.add_noise(x0, eps, torch.tensor([250]))
    ours = NoiseSchedule("epsilon", sd_alphas_cumprod()).add_noise(x0, eps, torch.tensor([250]))
    assert (snapped - ours).abs().max() > 0.1


def test_to_x0_inverts_noising_for_each_parametrisation():
    ac = sd_alphas_cumprod()
    x0, eps, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([10, 500, 990])
    eps_sched = NoiseSchedule("epsilon", ac)
    x_t = eps_sched.add_noise(x0, eps, t)
    torch.testing.assert_close(eps_sched.to_x0(eps, x_t, t), x0, rtol=1e-4, atol=1e-4)
    alpha, sigma = eps_sched.alpha_sigma(t)
    v_sched = NoiseSchedule("v_prediction", ac)
    torch.testing.assert_close(v_sched.to_x0(alpha * eps - sigma * x0, x_t, t), x0, rtol=1e-4, atol=1e-4)
    flow = NoiseSchedule("flow")
    x_t = flow.add_noise(x0, eps, t.float())
    torch.testing.assert_close(flow.to_x0(eps - x0, x_t, t.float()), x0, rtol=1e-4, atol=1e-4)


def test_boundary_scalings_match_diffusers_lcm():
    from diffusers import LCMScheduler

    sched = LCMScheduler()
    for t in (0, 1, 10, 249, 999):
        c_skip, c_out = boundary_condition_scalings(torch.tensor([t]))
        ref_skip, ref_out = sched.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        assert math.isclose(float(c_skip), float(ref_skip), rel_tol=1e-5, abs_tol=1e-9)
        assert math.isclose(float(c_out), float(ref_out), rel_tol=1e-5)
