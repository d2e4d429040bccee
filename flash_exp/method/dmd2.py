"""DMD2 (``method=dmd2``), as tianweiy/DMD2: distribution matching against a learned fake score.

Per data batch: the student (generator) turns noise into x0 at one of its fixed few-step timesteps
(the input at a later timestep comes from running the student's own sampler there, "backward
simulation"); the fake score (a second LoRA, ``fake``, on the same frozen base) takes one denoising
update on the detached samples plus a GAN-classifier update (the head reads the fake score's features,
real = the batch's data latents); every ``fake_updates``-th batch the generator also takes one update
with the distribution-matching loss and the GAN generator loss. No regression loss.

Every term works in the backbone's parametrisation through its noise schedule: x_t = alpha_t x0 +
sigma_t eps, the fake score's denoising target (eps, v, or the flow velocity eps - x0 with x_t =
(1 - s) x0 + s eps), and the DMD gradient on the x0 estimates of the real and fake scores. On a
flow-matching backbone the student samples with its Euler sampler (x0 = x_t - s v, no boundary scalings).

Notation: latents (B, C, h, w); t (B,); the teacher with its guidance (CFG, or FLUX.1-dev's guidance
embedding) is the real score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.backbones.noise_schedule import NoiseSchedule
from flash_exp.config import BackboneConfig, DMD2Config, OptimConfig
from flash_exp.method.boundary import student_output
from flash_exp.method.discriminator import DiscriminatorHead
from flash_exp.method.distiller import dmd_timestep_grid, draw_dmd_timesteps, guided_output
from flash_exp.method.losses import discriminator_gan_loss, dmd_loss, generator_gan_loss

FAKE_ADAPTER = "fake"


# ---------------------------------------------------------------------------------- losses
def distribution_matching_loss(x0: torch.Tensor, x0_real: torch.Tensor, x0_fake: torch.Tensor) -> torch.Tensor:
    """DMD2's generator loss: ½ MSE(x0, stopgrad(x0 - g)), g = (x0_fake - x0_real) / mean|x0 - x0_real|.

    ``x0`` (B, C, h, w) the student's samples; ``x0_real``/``x0_fake`` the real (teacher CFG) and fake
    scores' clean estimates at the same re-noised point. DMD2 writes g as (p_real - p_fake) / mean|p_real|
    with p = x_t - x0_estimate; the two are equal. The gradient with respect to ``x0`` is g / numel.
    """
    return 0.5 * dmd_loss(x0, x0_real, x0_fake)


def denoising_target(prediction: str, x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor,
                     sigma: torch.Tensor) -> torch.Tensor:
    """What a denoiser of ``prediction`` type should output at x_t = alpha x0 + sigma noise: eps, v or flow velocity."""
    if prediction == "epsilon":
        return noise
    if prediction == "v_prediction":
        return alpha * noise - sigma * x0
    return noise - x0


def fake_score_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The fake score's denoising loss: MSE between its raw output and :func:`denoising_target`, (B, C, h, w)."""
    return F.mse_loss(output.float(), target.float())


class DMD2Distiller(nn.Module):
    """Generator = the student's LoRA; fake score = the ``fake`` LoRA plus the GAN head."""

    def __init__(self, backbone: Backbone, backbone_cfg: BackboneConfig, settings: DMD2Config):
        super().__init__()
        self.backbone = backbone
        self.backbone_cfg = backbone_cfg
        self.settings = settings
        self.schedule: NoiseSchedule = backbone.schedule
        self.student_params = backbone.trainable_parameters()
        self.fake_params = backbone.add_named_adapter(FAKE_ADAPTER)
        self.discriminator = (
            DiscriminatorHead(backbone_cfg.discriminator.head, *backbone.feature_shape(),
                              list(backbone_cfg.discriminator.channels))
            if self.settings.gan else None
        )
        sched = backbone.make_scheduler("student")
        sched.set_timesteps(self.settings.num_denoising_step)
        self.timesteps = sched.timesteps.clone()  # (n,), noisiest first: 999, 749, 499, 249 for 4
        self.dmd_grid = dmd_timestep_grid(self.schedule, self.settings.min_timestep, self.settings.max_timestep)
        g = self.settings.real_guidance
        self.real_guidance = backbone_cfg.teacher_sampling.guidance if g is None else g

    def optimizer_groups(self, optim: OptimConfig) -> list[tuple[list[nn.Parameter], float, bool]]:
        """(parameters, learning rate, gradient clipping) per optimiser. The fake score (with the head)
        comes first: it steps on every data batch, so its step counter counts data batches."""
        lr = optim.lr
        head = list(self.discriminator.parameters()) if self.discriminator is not None else []
        return [(self.fake_params + head, lr, True), (self.student_params, lr, True)]

    # ------------------------------------------------------------------ pieces
    def student_x0(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        s = self.backbone_cfg
        return student_output(self.backbone, self.schedule, x_t, t, cond, s.sigma_data, s.timestep_scaling)

    def generator_input(self, z: torch.Tensor, cond: Condition,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, C, h, w) and t (B,) at one of the student's timesteps per sample.

        Index 0 is pure noise. A later index i: with backward simulation, the student's own sampler run
        (without gradient) from noise through steps 0..i-1, re-noised to t_i as its scheduler does;
        without, the data latents noised to t_i.
        """
        b, device = z.shape[0], z.device
        idx = torch.randint(0, len(self.timesteps), (b,), generator=generator)
        t = self.timesteps[idx].to(device)
        x = torch.randn(z.shape, generator=generator).to(z)
        if not self.settings.backward_simulation:
            noise = torch.randn(z.shape, generator=generator).to(z)
            start = (idx == 0).to(device).view(-1, *([1] * (z.ndim - 1)))
            return torch.where(start, x, self.schedule.add_noise(z, noise, t)), t
        x_t = x.clone()
        with torch.no_grad():
            for i in range(1, int(idx.max()) + 1):
                tt = self.timesteps[i - 1].expand(b).to(device)
                x = self.schedule.add_noise(self.student_x0(x, tt, cond), torch.randn(z.shape, generator=generator).to(z),
                                            self.timesteps[i].expand(b).to(device))
                x_t = torch.where((idx == i).to(device).view(-1, *([1] * (z.ndim - 1))), x, x_t)
        return x_t, t

    def draw_timesteps(self, b: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """Re-noising timesteps (B,) of the DMD, fake-score and GAN terms: uniform over the teacher's
        training timesteps within [min_timestep, max_timestep], read on its schedule (shifted for flow)."""
        return draw_dmd_timesteps(self.schedule, self.dmd_grid, b, generator).to(device)

    def dmd_term(self, x0: torch.Tensor, cond: Condition, null: Condition,
                 generator: torch.Generator) -> torch.Tensor:
        """The distribution-matching loss of the student's samples ``x0`` (with gradient)."""
        b = x0.shape[0]
        t = self.draw_timesteps(b, generator, x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        with torch.no_grad():
            x_t = self.schedule.add_noise(x0.detach(), noise, t)
            x0_real = self.schedule.to_x0(guided_output(self.backbone, x_t, t, cond, null, self.real_guidance), x_t, t)
            with self.backbone.adapter(FAKE_ADAPTER):
                x0_fake = self.schedule.to_x0(self.backbone.denoise(x_t, t, cond), x_t, t)
        return distribution_matching_loss(x0, x0_real, x0_fake)

    def gan_logits(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """The GAN head on the fake score's features at x0 re-noised to t: logits (B, N)."""
        x_t = self.schedule.add_noise(x0, noise, t)
        return self.discriminator(self.backbone.teacher_features(x_t, t, cond, adapter=FAKE_ADAPTER))

    def fake_loss(self, x0: torch.Tensor, z: torch.Tensor, cond: Condition,
                  generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The fake score's loss on the detached student samples ``x0``: denoising plus, with the GAN,
        ``fake_gan_weight`` times the classifier loss against the data latents ``z``."""
        b = x0.shape[0]
        t = self.draw_timesteps(b, generator, x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        x_t = self.schedule.add_noise(x0, noise, t)
        with self.backbone.adapter(FAKE_ADAPTER):
            out = self.backbone.denoise(x_t, t, cond)
        alpha, sigma = (a.to(x0) for a in self.schedule.alpha_sigma(t, x0.ndim))
        loss = fake_score_loss(out, denoising_target(self.schedule.prediction, x0, noise, alpha, sigma))
        logs = {"loss/fake_score": loss.item()}
        if self.discriminator is not None:
            t_gan = self.draw_timesteps(b, generator, x0.device)
            gan_noise = torch.randn(x0.shape, generator=generator).to(x0)
            real_logits = self.gan_logits(z, gan_noise, t_gan, cond)
            fake_logits = self.gan_logits(x0, gan_noise, t_gan, cond)
            cls = discriminator_gan_loss("non-saturating", real_logits, fake_logits)  # DMD2's classifier loss
            loss = loss + self.settings.fake_gan_weight * cls
            logs.update({"loss/discriminator": cls.item(), "disc/real_logit": real_logits.mean().item(),
                         "disc/fake_logit": fake_logits.mean().item()})
        return loss, logs

    # ------------------------------------------------------------------ one batch
    def train_step(self, z: torch.Tensor, cond: Condition, null: Condition, step: int,
                   generator: torch.Generator, update) -> dict[str, float]:
        """A generator update every ``fake_updates`` batches, then the fake-score update; ``update(index,
        loss, logs)`` back-propagates and steps optimiser ``index`` (0: fake score, 1: generator)."""
        generator_turn = step % self.settings.fake_updates == 0
        x_t, t = self.generator_input(z, cond, generator)
        logs: dict[str, float] = {}
        with torch.set_grad_enabled(generator_turn):
            x0 = self.student_x0(x_t, t, cond)
        if generator_turn:
            dm = self.dmd_term(x0, cond, null, generator)
            loss = dm
            logs["loss/dmd"] = dm.item()
            if self.discriminator is not None:
                t_gan = self.draw_timesteps(z.shape[0], generator, z.device)
                g = generator_gan_loss("non-saturating", self.gan_logits(x0, torch.randn(z.shape, generator=generator).to(z), t_gan, cond))
                loss = loss + self.settings.gen_gan_weight * g
                logs["loss/gan_generator"] = g.item()
            update(1, loss, logs)
            logs["loss/generator"] = loss.item()
        fake, fake_logs = self.fake_loss(x0.detach(), z, cond, generator)
        update(0, fake, fake_logs)
        logs.update(fake_logs)
        return logs
