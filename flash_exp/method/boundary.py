"""The one-step student's x0: the consistency boundary condition c_skip * x_t + c_out * x0_model where its
sampler applies it (``LCMScheduler``), the parametrisation's x0_model as it is otherwise (flow matching's
Euler sampler: x0 = x_t - sigma * v, as the official ``flash_sd3``)."""

from __future__ import annotations

import torch

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.backbones.noise_schedule import NoiseSchedule


def boundary_condition_scalings(
    t: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0, ndim: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """c_skip and c_out of the consistency boundary condition, shaped (B, 1, ..., 1).

    c_skip = sigma_data^2 / ((s t)^2 + sigma_data^2), c_out = s t / sqrt((s t)^2 + sigma_data^2) with
    s = ``timestep_scaling`` (10, i.e. t / 0.1, as the paper's LCM-style student). At t=0 the output is
    x_t itself; for the trained timesteps (t >= 10) it is almost exactly the x0 estimate.
    """
    scaled = t.double().cpu() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2).sqrt()
    shape = (-1,) + (1,) * (ndim - 1)
    return c_skip.float().view(shape), c_out.float().view(shape)


def student_output(backbone: Backbone, schedule: NoiseSchedule, x_t: torch.Tensor, t: torch.Tensor,
                   cond: Condition, sigma_data: float, timestep_scaling: float) -> torch.Tensor:
    """The student's x0 at (x_t, t), (B, C, h, w), read as its sampler reads it.

    With ``backbone.student_boundary_condition``: c_skip(t) * x_t + c_out(t) * x0(x_t, t); without:
    x0(x_t, t) of the parametrisation.
    """
    with backbone.adapter(True):
        out = backbone.denoise(x_t, t, cond)
    x0 = schedule.to_x0(out, x_t, t)
    if not backbone.student_boundary_condition:
        return x0
    c_skip, c_out = boundary_condition_scalings(t, sigma_data, timestep_scaling, x_t.ndim)
    return c_skip.to(x_t) * x_t + c_out.to(x_t) * x0
