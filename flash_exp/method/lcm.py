"""Latent consistency distillation (``method=lcm``), as the diffusers LCM-LoRA training scripts.

Per data batch: each sample gets an index n on the solver's skipping-step grid (t_n = (n + 1) * T / N - 1,
N = ``num_ddim_timesteps``), is noised to t_n, and the teacher (CFG scale w drawn per sample) takes one
DDIM step to t_prev = max(t_n - T / N, 0). The student's boundary-condition output at (x_{t_n}, t_n) is
pulled towards its own output, without gradient, at (x_{t_prev}, t_prev) (the LoRA scripts' target
network is the student itself). Notation: latents (B, C, h, w); t (B,).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import BackboneConfig, LCMConfig, OptimConfig
from flash_exp.method.boundary import student_output
from flash_exp.method.distiller import guided_output


# ---------------------------------------------------------------------------------- losses
def consistency_loss(kind: str, prediction: torch.Tensor, target: torch.Tensor, huber_c: float = 0.001) -> torch.Tensor:
    """``huber``: mean(sqrt((pred - target)^2 + c^2) - c), the scripts' pseudo-Huber; ``l2``: MSE."""
    if kind == "huber":
        return torch.mean(torch.sqrt((prediction.float() - target.float()) ** 2 + huber_c**2) - huber_c)
    if kind == "l2":
        return F.mse_loss(prediction.float(), target.float())
    raise ValueError(f"unknown consistency loss {kind!r}")


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, alpha_prev: torch.Tensor, sigma_prev: torch.Tensor) -> torch.Tensor:
    """One deterministic DDIM step to the previous timestep: alpha_prev * x0 + sigma_prev * eps.

    ``x0``/``eps`` (B, C, h, w) are the (guided) estimates at the current timestep; alpha_prev and
    sigma_prev (B, 1, 1, 1) those of the previous timestep.
    """
    return alpha_prev * x0 + sigma_prev * eps


def solver_grid(num_train_timesteps: int, num_ddim_timesteps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The skipping-step grid: (t_n, t_prev) for n = 0..N-1, t_n = (n + 1) * k - 1, t_prev = max(t_n - k, 0)."""
    k = num_train_timesteps // num_ddim_timesteps
    t = torch.arange(1, num_ddim_timesteps + 1) * k - 1
    return t, (t - k).clamp(min=0)


class LCMDistiller(nn.Module):
    """One consistency-distillation loss per data batch; the student's LoRA is the only trained weight."""

    def __init__(self, backbone: Backbone, backbone_cfg: BackboneConfig, settings: LCMConfig):
        super().__init__()
        self.backbone = backbone
        self.backbone_cfg = backbone_cfg
        self.settings = settings
        self.schedule = backbone.schedule
        self.t_start, self.t_prev = solver_grid(self.schedule.num_train_timesteps, self.settings.num_ddim_timesteps)
        self.guidance_range = tuple(self.settings.guidance_range or backbone_cfg.guidance_range)

    def optimizer_groups(self, optim: OptimConfig) -> list[tuple[list[nn.Parameter], float, bool]]:
        """(parameters, learning rate, gradient clipping) per optimiser; the first counts data batches."""
        return [(self.backbone.trainable_parameters(), optim.lr, True)]

    def loss(self, z: torch.Tensor, cond: Condition, null: Condition,
             generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The consistency loss for clean latents ``z`` (B, C, h, w)."""
        b = z.shape[0]
        n = torch.randint(0, len(self.t_start), (b,), generator=generator)
        t_n = self.schedule.shift_timesteps(self.t_start[n]).to(z.device)
        t_prev = self.schedule.shift_timesteps(self.t_prev[n]).to(z.device)
        lo, hi = self.guidance_range
        w = lo + (hi - lo) * torch.rand((b,), generator=generator)
        noise = torch.randn(z.shape, generator=generator).to(z)
        x_t = self.schedule.add_noise(z, noise, t_n)
        s = self.backbone_cfg
        prediction = student_output(self.backbone, self.schedule, x_t, t_n, cond, s.sigma_data, s.timestep_scaling)
        with torch.no_grad():
            guided = guided_output(self.backbone, x_t, t_n, cond, null, w.to(z.device))
            x0 = self.schedule.to_x0(guided, x_t, t_n)
            alpha, sigma = (a.to(z) for a in self.schedule.alpha_sigma(t_n, z.ndim))
            eps = (x_t - alpha * x0) / sigma
            alpha_prev, sigma_prev = (a.to(z) for a in self.schedule.alpha_sigma(t_prev, z.ndim))
            x_prev = ddim_step(x0, eps, alpha_prev, sigma_prev)
            target = student_output(self.backbone, self.schedule, x_prev, t_prev, cond, s.sigma_data,
                                        s.timestep_scaling)
        loss = consistency_loss(self.settings.loss, prediction, target, self.settings.huber_c)
        return loss, {"loss/consistency": loss.item(), "guidance": float(w.mean()),
                      "start_timestep": float(t_n.float().mean())}

    def train_step(self, z: torch.Tensor, cond: Condition, null: Condition, step: int,
                   generator: torch.Generator, update) -> dict[str, float]:
        """One student update; ``update(index, loss, logs)`` back-propagates and steps optimiser ``index``."""
        loss, logs = self.loss(z, cond, null, generator)
        update(0, loss, logs)
        logs["loss/generator"] = loss.item()
        return logs
