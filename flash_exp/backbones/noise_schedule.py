"""The training noise schedule with explicit alpha_t and sigma_t, and the parametrisation conversions.

All noising (student input, GAN re-noising, DMD re-noising) goes through :meth:`NoiseSchedule.add_noise`
with the closed form x_t = alpha_t * x0 + sigma_t * eps, never through a K-step sampler's
``add_noise`` (which snaps t to the nearest timestep of its current schedule).

Timesteps are in the training scheduler's units: integers (or floats) in [0, num_train_timesteps).
"""

from __future__ import annotations

import torch

from flash_exp.config import train_timestep_range


class NoiseSchedule:
    """alpha_t and sigma_t of a diffusion (``epsilon``/``v_prediction``) or flow-matching (``flow``) model.

    Diffusion: alpha_t = sqrt(alphas_cumprod[t]), sigma_t = sqrt(1 - alphas_cumprod[t]).
    Flow matching (rectified flow, as SD3): s = t / T, alpha_t = 1 - s, sigma_t = s, and the model
    predicts the velocity v = eps - x0. ``shift`` is the flow scheduler's timestep shift (3.0 for
    SD3-medium), used by :meth:`shift_timesteps`.
    """

    def __init__(self, prediction: str, alphas_cumprod: torch.Tensor | None = None, num_train_timesteps: int = 1000,
                 shift: float = 1.0):
        if prediction not in ("epsilon", "v_prediction", "flow"):
            raise ValueError(f"unknown prediction type {prediction!r}")
        if prediction != "flow" and alphas_cumprod is None:
            raise ValueError("a diffusion schedule needs alphas_cumprod")
        self.prediction = prediction
        self.num_train_timesteps = num_train_timesteps
        self.alphas_cumprod = None if alphas_cumprod is None else alphas_cumprod.double()
        self.shift = shift

    @classmethod
    def from_scheduler(cls, scheduler, prediction: str) -> NoiseSchedule:
        """Build from a diffusers training scheduler (DDPM-like with ``alphas_cumprod``, or flow matching)."""
        n = scheduler.config.num_train_timesteps
        if prediction == "flow":
            return cls("flow", None, n, shift=float(scheduler.config.get("shift", 1.0)))
        return cls(prediction, scheduler.alphas_cumprod.clone(), n)

    def training_timesteps(self) -> torch.Tensor:
        """The integer timesteps its scheduler trains on, unshifted and ascending, (T,): 0..T-1 for a
        diffusion schedule, 1..T for flow matching (see :func:`~flash_exp.config.train_timestep_range`).
        :meth:`shift_timesteps` reads them on this schedule."""
        first, last = train_timestep_range(self.prediction, self.num_train_timesteps)
        return torch.arange(first, last + 1)

    def shift_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """Timesteps given on the unshifted [0, T) grid (the GAN levels, the DMD draws) -> this schedule's.

        The identity for diffusion schedules. For a shifted flow schedule, as its scheduler places its
        own timesteps: s = t / T, sigma = shift * s / (1 + (shift - 1) * s), returned as sigma * T
        (SD3-medium, shift 3: 10, 250, 500, 750 -> 29.4, 500, 750, 900). ``t`` (B,) -> (B,).
        """
        if self.prediction != "flow" or self.shift == 1.0:
            return t
        s = t.double() / self.num_train_timesteps
        sigma = self.shift * s / (1.0 + (self.shift - 1.0) * s)
        return (sigma * self.num_train_timesteps).to(torch.float32)

    def alpha_sigma(self, t: torch.Tensor, ndim: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t and sigma_t for timesteps ``t`` (B,), shaped (B, 1, ..., 1) with ``ndim`` dims, float32."""
        t = t.detach().double().cpu()
        if self.prediction == "flow":
            s = t / self.num_train_timesteps
            alpha, sigma = 1.0 - s, s
        else:
            ac = self.alphas_cumprod[t.round().long().clamp(0, self.num_train_timesteps - 1)]
            alpha, sigma = ac.sqrt(), (1.0 - ac).sqrt()
        shape = (-1,) + (1,) * (ndim - 1)
        return alpha.float().view(shape), sigma.float().view(shape)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = alpha_t * x0 + sigma_t * noise, with x0 and noise (B, ...) and t (B,)."""
        alpha, sigma = self.alpha_sigma(t, x0.ndim)
        return alpha.to(x0) * x0 + sigma.to(x0) * noise

    def to_x0(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model's clean-sample estimate x0 from its raw output at (x_t, t)."""
        alpha, sigma = (a.to(x_t) for a in self.alpha_sigma(t, x_t.ndim))
        if self.prediction == "epsilon":
            return (x_t - sigma * model_output) / alpha
        if self.prediction == "v_prediction":
            return alpha * x_t - sigma * model_output
        return x_t - sigma * model_output  # flow: v = eps - x0 and x_t = (1 - s) x0 + s eps
