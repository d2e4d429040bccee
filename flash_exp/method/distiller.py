"""The Flash Diffusion distiller: generator and discriminator losses for one data batch.

One data batch costs one teacher rollout: :meth:`FlashDistiller.generator_loss` returns, besides the
loss, a :class:`DiscriminatorInputs` cache (the detached student sample, its noisy version and its
teacher features) that :meth:`FlashDistiller.discriminator_loss` reuses on the same batch.

Notation: latents z (B, C, h, w); ``idx`` the start index in the K-step teacher schedule (0 = most
noisy); t the training timestep at that index; w the CFG scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.backbones.noise_schedule import NoiseSchedule
from flash_exp.config import BackboneConfig, LossConfig, OptimConfig, PhasesConfig, TimestepsConfig
from flash_exp.method.boundary import student_output
from flash_exp.method.discriminator import DiscriminatorHead
from flash_exp.method.losses import (
    central_crop,
    discriminator_gan_loss,
    distillation_loss,
    dmd_loss,
    generator_gan_loss,
)
from flash_exp.method.phases import Phase, PhaseSchedule
from flash_exp.method.timesteps import sample_indices


@dataclass
class DiscriminatorInputs:
    """What the discriminator step reuses from the generator step of the same batch."""

    real: torch.Tensor  # (B, C, h, w) clean real latents (data, or the teacher's x0)
    noise: torch.Tensor  # (B, C, h, w) the noise shared by the real and fake re-noising
    t: torch.Tensor  # (B,) GAN timesteps
    cond: Condition
    fake_features: torch.Tensor | None  # teacher features of the noisy fake, detached; None if not computed
    fake: torch.Tensor  # (B, C, h, w) detached student x0


def guided_output(backbone: Backbone, x_t: torch.Tensor, t: torch.Tensor, cond: Condition,
                  null: Condition, guidance: torch.Tensor | float) -> torch.Tensor:
    """Teacher (LoRA off) output with classifier-free guidance, conditional and null in one 2B call.

    out = out_null + w * (out_cond - out_null); ``guidance`` is a float or (B,) per-sample scales. A
    guidance-distilled teacher (``backbone.embeds_guidance``) takes w as an input instead: one B call.
    """
    b = x_t.shape[0]
    if backbone.embeds_guidance:
        with backbone.adapter(False):
            return backbone.denoise(x_t, t, backbone.with_guidance(cond, guidance))
    with backbone.adapter(False):
        both = backbone.denoise(torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, null]))
    out_cond, out_null = both[:b], both[b:]
    w = torch.as_tensor(guidance, dtype=x_t.dtype, device=x_t.device).reshape(-1, *([1] * (x_t.ndim - 1)))
    return out_null + w * (out_cond - out_null)


def dmd_timestep_grid(schedule: NoiseSchedule, lo: int | None, hi: int | None) -> torch.Tensor:
    """DMD's candidate timesteps, unshifted: the teacher's training timesteps within [lo, hi] (None: that
    end of the support), (N,)."""
    grid = schedule.training_timesteps()
    return grid[(grid >= (grid[0] if lo is None else lo)) & (grid <= (grid[-1] if hi is None else hi))]


def draw_dmd_timesteps(schedule: NoiseSchedule, grid: torch.Tensor, batch_size: int,
                       generator: torch.Generator) -> torch.Tensor:
    """DMD's re-noising timesteps (B,): uniform over ``grid`` (:func:`dmd_timestep_grid`), read on ``schedule``.

    As the official draws: t ~ U{0..999} for the diffusion teachers; for SD3 the 1000-step flow
    scheduler's ``timesteps[U{0..999}]``, i.e. unshifted t ~ U{1..1000} through the shift (sigma = 1
    reachable, sigma = 0 not).
    """
    t = grid[torch.randint(len(grid), (batch_size,), generator=generator)]
    return schedule.shift_timesteps(t)


class FlashDistiller(nn.Module):
    """Student LoRA training against a K-step teacher, with GAN and DMD terms, as in the paper."""

    def __init__(self, backbone: Backbone, backbone_cfg: BackboneConfig, loss: LossConfig,
                 timesteps: TimestepsConfig, phases: PhasesConfig, lpips: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.backbone_cfg = backbone_cfg
        self.loss_cfg = loss
        self.timesteps_cfg = timesteps
        self.phases = PhaseSchedule.from_config(phases, loss, timesteps, backbone_cfg.guidance_range)
        self.schedule = backbone.schedule
        self.dmd_grid = dmd_timestep_grid(self.schedule, loss.dmd.min_timestep, loss.dmd.max_timestep)
        self.teacher_scheduler = backbone.make_scheduler("teacher")
        self.lpips = lpips
        # a sharded denoiser (FSDP) gathers its weights from every rank at each call, so every rank must
        # call it equally often; the rollout's length depends on this rank's start indices. Set, it maps
        # this rank's teacher calls in a rollout to the most of any rank (this rank pads up to that)
        self.calls_across_ranks: Callable[[int], int] | None = None
        self.use_discriminator = loss.adversarial.enabled
        self.discriminator = (
            DiscriminatorHead(backbone_cfg.discriminator.head, *backbone.feature_shape(),
                              list(backbone_cfg.discriminator.channels))
            if self.use_discriminator
            else None
        )

    # ------------------------------------------------------------------ pieces
    def teacher_timesteps(self, k: int) -> torch.Tensor:
        """The K-step teacher schedule's timesteps, (K,), noisiest first."""
        self.teacher_scheduler.set_timesteps(k)
        return self.teacher_scheduler.timesteps.clone()

    def noisy_input(self, z: torch.Tensor, noise: torch.Tensor, idx: torch.Tensor,
                    timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t at the sampled indices (pure noise at index 0, as the paper) and t (B,)."""
        t = timesteps[idx].to(z.device)
        x_t = self.schedule.add_noise(z, noise, t)
        start = (idx == 0).to(z.device).view(-1, *([1] * (z.ndim - 1)))
        return torch.where(start, noise, x_t), t

    def student_x0(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """One student step x_t -> x0, read as the student's sampler reads it (see :func:`student_output`)."""
        s = self.backbone_cfg
        return student_output(self.backbone, self.schedule, x_t, t, cond, s.sigma_data, s.timestep_scaling)

    @torch.inference_mode()
    def teacher_rollout(self, x_t: torch.Tensor, idx: torch.Tensor, k: int, cond: Condition,
                        null: Condition, guidance: torch.Tensor) -> torch.Tensor:
        """The teacher's x0: its K-step sampler from each sample's start index to the end, with CFG.

        Samples sharing a start index run together; returns (B, C, h, w), an inference-mode tensor
        (clone it before it enters an autograd graph).
        """
        out = torch.empty_like(x_t)
        starts = idx.unique().tolist()
        self.teacher_scheduler.set_timesteps(k)
        calls = sum(len(self.teacher_scheduler.timesteps) - start for start in starts)
        padding = 0 if self.calls_across_ranks is None else self.calls_across_ranks(calls) - calls
        for start in starts:
            rows = (idx == start).nonzero().flatten().to(x_t.device)
            x = x_t[rows]
            c, n, w = cond.select(rows), null.select(rows), guidance[rows]
            sched = self.teacher_scheduler
            sched.set_timesteps(k)
            for t in sched.timesteps[start:]:
                tt = t.expand(x.shape[0]).to(x.device)
                model_in = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
                guided = guided_output(self.backbone, model_in, tt, c, n, w)
                x = sched.step(guided, t, x, return_dict=False)[0]
            out[rows] = x
        first = torch.zeros(1, dtype=torch.long, device=x_t.device)
        for _ in range(padding):  # calls whose output is unused: this rank keeps step with the others
            guided_output(self.backbone, x_t[:1], self.teacher_scheduler.timesteps[-1:].to(x_t.device),
                          cond.select(first), null.select(first), guidance[:1])
        return out

    def draw_guidance(self, phase: Phase, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """One CFG scale per call, uniform in the phase's range, repeated over the batch: (B,)."""
        lo, hi = phase.guidance_range
        w = lo + (hi - lo) * torch.rand((), generator=generator)
        return w.expand(batch_size).clone()

    def _distill(self, x0_student: torch.Tensor, x0_teacher: torch.Tensor) -> torch.Tensor:
        kind = self.loss_cfg.distill.type
        if kind == "lpips":
            size = self.loss_cfg.distill.lpips_crop
            a = self.backbone.decode_latents(central_crop(x0_student, size))
            b = self.backbone.decode_latents(central_crop(x0_teacher, size))
            return distillation_loss(kind, a, b, self.lpips)
        return distillation_loss(kind, x0_student, x0_teacher)

    # ------------------------------------------------------------------ generator
    def generator_loss(self, z: torch.Tensor, cond: Condition, null: Condition, step: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float], DiscriminatorInputs | None]:
        """Loss of the student's LoRA for one batch of clean latents ``z`` (B, C, h, w) at ``step``.

        L = w_distill * d(x0_student, x0_teacher) + w_adv * G(x0_student) + w_dmd * DMD(x0_student).
        A term whose weight is 0 in the current phase costs no forward pass.
        """
        phase = self.phases.at(step)
        b, device = z.shape[0], z.device
        timesteps = self.teacher_timesteps(phase.k)
        idx = sample_indices(phase.probs, b, self.timesteps_cfg.per_sample, generator)
        noise = torch.randn(z.shape, generator=generator).to(z)
        x_t, t = self.noisy_input(z, noise, idx, timesteps)

        x0_student = self.student_x0(x_t, t, cond)
        guidance = self.draw_guidance(phase, b, generator)
        x0_teacher = self.teacher_rollout(x_t, idx, phase.k, cond, null, guidance).clone()

        distill = self._distill(x0_student, x0_teacher)
        loss = phase.distill_weight * distill
        logs = {"loss/distill": distill.item(), "phase": float(phase.index), "k": float(phase.k),
                "start_index": float(idx.float().mean()), "guidance": float(guidance[0])}

        disc_inputs = None
        if self.use_discriminator:
            adv = self.loss_cfg.adversarial
            choices = torch.tensor(adv.timesteps)
            t_gan = choices[torch.randint(len(choices), (b,), generator=generator)]
            t_gan = self.schedule.shift_timesteps(t_gan).to(device)
            gan_noise = torch.randn(z.shape, generator=generator).to(z)
            real = z if adv.real == "data" else x0_teacher
            fake_features = None
            if phase.adversarial_weight > 0:
                noisy_fake = self.schedule.add_noise(x0_student, gan_noise, t_gan)
                fake_features = self.backbone.teacher_features(noisy_fake, t_gan, cond)
                g_loss = generator_gan_loss(adv.type, self.discriminator(fake_features))
                loss = loss + phase.adversarial_weight * g_loss
                logs["loss/gan_generator"] = g_loss.item()
                fake_features = fake_features.detach()
            disc_inputs = DiscriminatorInputs(real=real.detach(), noise=gan_noise, t=t_gan, cond=cond,
                                              fake_features=fake_features, fake=x0_student.detach())

        if phase.dmd_weight > 0:
            d_loss = self._dmd(x0_student, cond, null, phase, generator)
            loss = loss + phase.dmd_weight * d_loss
            logs["loss/dmd"] = d_loss.item()

        logs["loss/generator"] = loss.item()
        return loss, logs, disc_inputs

    def dmd_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """DMD's re-noising timesteps (B,): see :func:`draw_dmd_timesteps`."""
        return draw_dmd_timesteps(self.schedule, self.dmd_grid, batch_size, generator)

    def _dmd(self, x0_student: torch.Tensor, cond: Condition, null: Condition, phase: Phase,
             generator: torch.Generator) -> torch.Tensor:
        """DMD term: teacher CFG score as real, the student itself (no grad) as the fake score."""
        b = x0_student.shape[0]
        t = self.dmd_timesteps(b, generator).to(x0_student.device)
        noise = torch.randn(x0_student.shape, generator=generator).to(x0_student)
        guidance = self.draw_guidance(phase, b, generator)
        with torch.inference_mode():
            x_t = self.schedule.add_noise(x0_student.detach(), noise, t)
            real_out = guided_output(self.backbone, x_t, t, cond, null, guidance)
            with self.backbone.adapter(True):
                fake_out = self.backbone.denoise(x_t, t, cond)
            x0_real = self.schedule.to_x0(real_out, x_t, t)
            x0_fake = self.schedule.to_x0(fake_out, x_t, t)
        return dmd_loss(x0_student, x0_real.clone(), x0_fake.clone())

    # ------------------------------------------------------------------ discriminator
    def discriminator_loss(self, inputs: DiscriminatorInputs) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of the discriminator head on the batch's real latents and the detached student sample."""
        adv = self.loss_cfg.adversarial
        with torch.no_grad():
            noisy_real = self.schedule.add_noise(inputs.real, inputs.noise, inputs.t)
            real_features = self.backbone.teacher_features(noisy_real, inputs.t, inputs.cond)
            fake_features = inputs.fake_features
            if fake_features is None:
                noisy_fake = self.schedule.add_noise(inputs.fake, inputs.noise, inputs.t)
                fake_features = self.backbone.teacher_features(noisy_fake, inputs.t, inputs.cond)
        real_logits = self.discriminator(real_features)
        fake_logits = self.discriminator(fake_features)
        loss = discriminator_gan_loss(adv.type, real_logits, fake_logits)
        return loss, {"loss/discriminator": loss.item(),
                      "disc/real_logit": real_logits.mean().item(), "disc/fake_logit": fake_logits.mean().item()}

    def clip_discriminator(self) -> None:
        """WGAN weight clipping, after each discriminator update."""
        if self.discriminator is not None and self.loss_cfg.adversarial.type == "wgan":
            c = self.loss_cfg.adversarial.wgan_clip
            for p in self.discriminator.parameters():
                p.data.clamp_(-c, c)

    # ------------------------------------------------------------------ one batch
    def optimizer_groups(self, optim: OptimConfig) -> list[tuple[list[nn.Parameter], float, bool]]:
        """(parameters, learning rate, gradient clipping) per optimiser: the student (counts data
        batches), then the discriminator head when there is one."""
        groups = [(self.backbone.trainable_parameters(), optim.lr, True)]
        if self.discriminator is not None:
            groups.append((list(self.discriminator.parameters()), optim.lr_discriminator, False))
        return groups

    def train_step(self, z: torch.Tensor, cond: Condition, null: Condition, step: int,
                   generator: torch.Generator, update) -> dict[str, float]:
        """The generator update, then the discriminator update on the same batch's cache;
        ``update(index, loss, logs)`` back-propagates and steps optimiser ``index`` (``logs``: the
        loss terms, named if the loss is not finite)."""
        loss, logs, disc_inputs = self.generator_loss(z, cond, null, step, generator)
        update(0, loss, logs)
        phase = self.phases.at(step)
        train_disc = phase.adversarial_weight > 0 or self.loss_cfg.adversarial.train_in_warmup
        if self.discriminator is not None and disc_inputs is not None and train_disc:
            d_loss, d_logs = self.discriminator_loss(disc_inputs)
            update(1, d_loss, d_logs)
            self.clip_discriminator()
            logs.update(d_logs)
        return logs
