"""What one data batch of each method costs, in denoiser evaluations of B samples, before training.

``teacher_evals`` counts the teacher's (LoRA off) evaluations as training logs
``cost/teacher_evals_per_batch``: samples through the teacher per batch, divided by B, so a 2B CFG
call counts 2 and a discriminator feature pass on B samples counts 1 (it stops at the feature block).
``forwards`` adds every other denoiser pass of B samples (student, DMD2's fake score), a backward
counted as two forwards, for the seconds a batch takes.

- Flash: the teacher's K-step rollout from a start index i drawn from the phase's pi takes K - i
  solver steps, each one CFG call on 2B samples: 2 E_pi[K - i]; the GAN's feature passes (the
  generator's fake and the discriminator's real, or real and fake while the adversarial weight is 0
  and ``train_in_warmup``) add 2; the DMD real score (one CFG call) adds 2.
- LCM: one DDIM solver step of the teacher with CFG per batch: 2.
- DMD2: the real score (one CFG call) only on a generator turn, every ``fake_updates``-th batch:
  2 per generator turn; the fake score and its GAN head run on the ``fake`` LoRA, not the teacher.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flash_exp.config import DMD2Config, TrainConfig

STUDENT_UPDATE = 3.0  # a forward and its backward, in forwards
CFG_CALL = 2.0  # one guided teacher call: conditional and null halves, 2B samples
EMBEDDED_GUIDANCE_CALL = 1.0  # a guidance-distilled teacher (FLUX.1-dev): w is an input, B samples


def guided_call(cfg: TrainConfig) -> float:
    """Teacher evaluations of one guided call: one for a guidance-distilled teacher, whose student keeps a
    guidance input (``backbone.student_guidance > 0``), two (CFG) otherwise."""
    return EMBEDDED_GUIDANCE_CALL if cfg.backbone.student_guidance > 0 else CFG_CALL


@dataclass(frozen=True)
class BatchCost:
    """Mean cost of one data batch: ``teacher_evals`` as training logs it, ``forwards`` all passes."""

    teacher_evals: float
    forwards: float


def expected_rollout_steps(cfg: TrainConfig, phase: int) -> float:
    """E_pi[K - i]: the teacher's solver steps per batch in Flash phase ``phase`` (K and pi of the phase)."""
    from flash_exp.method.timesteps import timestep_distribution

    k, t = cfg.phases.k[phase], cfg.timesteps
    probs = timestep_distribution(t.distribution, k, t.mode_probs[phase], t.variance, t.gaussian_mean,
                                  t.gaussian_variance)
    return float(sum(p * (k - i) for i, p in enumerate(probs.tolist())))


def flash_cost(cfg: TrainConfig, phase: int) -> BatchCost:
    """One Flash batch in ``phase``: the rollout, the GAN's feature passes, the DMD real score."""
    adv, dmd = cfg.loss.adversarial, cfg.loss.dmd
    adversarial = adv.enabled and adv.weight[phase] > 0
    gan = adv.enabled and (adversarial or adv.train_in_warmup)
    real_score = dmd.enabled and dmd.weight[phase] > 0
    call = guided_call(cfg)
    teacher = call * expected_rollout_steps(cfg, phase) + (2.0 if gan else 0.0) + (call if real_score else 0.0)
    # the student's update; its DMD fake score (the student without gradient); the generator's GAN
    # gradient back through the teacher's feature blocks
    others = STUDENT_UPDATE + (1.0 if real_score else 0.0) + (2.0 if adversarial else 0.0)
    return BatchCost(teacher, teacher + others)


def lcm_cost() -> BatchCost:
    """One LCM batch: the teacher's one guided solver step; the student's update and its target pass."""
    return BatchCost(CFG_CALL, CFG_CALL + STUDENT_UPDATE + 1.0)


def generator_turns(first_step: int, batches: int, fake_updates: int) -> int:
    """DMD2's generator updates among the data batches ``first_step`` .. ``first_step + batches - 1`` (a
    batch whose step is a multiple of ``fake_updates``)."""
    return math.ceil((first_step + batches) / fake_updates) - math.ceil(first_step / fake_updates)


def expected_backward_simulation(steps: int, batch_size: int) -> float:
    """E[max index] of ``batch_size`` indices uniform on 0..steps-1: the student passes that backward
    simulation runs per batch (one per step up to the batch's latest start)."""
    return sum(1 - (m / steps) ** batch_size for m in range(1, steps))


def dmd2_cost(settings: DMD2Config, batch_size: int, turn_share: float) -> BatchCost:
    """One DMD2 batch, ``turn_share`` of batches being generator turns: the real score's CFG call on a
    turn; the student, backward simulation, fake score and GAN head passes for the seconds."""
    teacher = CFG_CALL * turn_share
    simulation = expected_backward_simulation(settings.num_denoising_step, batch_size) \
        if settings.backward_simulation else 0.0
    student = 1.0 + 2.0 * turn_share  # its sample, with a backward on a generator turn
    fake_on_turn = 1.0 + (STUDENT_UPDATE if settings.gan else 0.0)  # DMD's fake score; the GAN generator term
    fake_update = STUDENT_UPDATE + (2 * STUDENT_UPDATE if settings.gan else 0.0)  # denoising; real and fake logits
    return BatchCost(teacher, teacher + simulation + student + turn_share * fake_on_turn + fake_update)


def phase_cost(cfg: TrainConfig, phase: int, first_step: int, batches: int) -> BatchCost:
    """Mean cost per batch of ``cfg.method`` over the ``batches`` data batches of ``phase`` that start at
    step ``first_step``."""
    name = cfg.method.name
    if name == "lcm":
        return lcm_cost()
    if name == "dmd2":
        settings = cfg.method.dmd2_settings()
        share = (generator_turns(first_step, batches, settings.fake_updates) / batches if batches
                 else 1 / settings.fake_updates)
        return dmd2_cost(settings, cfg.data.batch_size, share)
    return flash_cost(cfg, phase)
