"""Training phases: which K, timestep distribution, loss weights and teacher CFG range hold at a step.

A step is one data batch (one generator update and one discriminator update). The official code
counts two per batch; here ``phases.iterations`` are data batches. After the last phase the last
phase stays in force.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

import torch

from flash_exp.config import LossConfig, PhasesConfig, TimestepsConfig
from flash_exp.method.timesteps import timestep_distribution


@dataclass(frozen=True)
class Phase:
    index: int
    name: str
    k: int
    probs: torch.Tensor  # (K,) over the teacher-schedule indices
    distill_weight: float
    adversarial_weight: float
    dmd_weight: float
    guidance_range: tuple[float, float]


class PhaseSchedule:
    """Maps a global step (data batches seen) to the :class:`Phase` in force."""

    def __init__(self, phases: list[Phase], iterations: list[int]):
        if len(phases) != len(iterations):
            raise ValueError("one iteration count per phase")
        self.phases = phases
        self.boundaries = list(accumulate(iterations))  # first step of phase i+1

    @property
    def total_steps(self) -> int:
        return self.boundaries[-1]

    def at(self, step: int) -> Phase:
        return self.phases[min(bisect_right(self.boundaries, step), len(self.phases) - 1)]

    @classmethod
    def from_config(cls, phases_cfg: PhasesConfig, loss: LossConfig, ts: TimestepsConfig,
                    guidance_range: list[float]) -> PhaseSchedule:
        """The schedule of ``phases_cfg`` with each phase's timestep distribution, loss weights and the
        backbone's CFG range ``guidance_range`` [low, high]."""
        phases = []
        for i, (name, k) in enumerate(zip(phases_cfg.names, phases_cfg.k, strict=True)):
            probs = timestep_distribution(
                ts.distribution, k, ts.mode_probs[i], ts.variance, ts.gaussian_mean, ts.gaussian_variance
            )
            phases.append(
                Phase(
                    index=i,
                    name=name,
                    k=k,
                    probs=probs,
                    distill_weight=loss.distill.weight[i],
                    adversarial_weight=loss.adversarial.weight[i] if loss.adversarial.enabled else 0.0,
                    dmd_weight=loss.dmd.weight[i] if loss.dmd.enabled else 0.0,
                    guidance_range=(guidance_range[0], guidance_range[1]),
                )
            )
        return cls(phases, list(phases_cfg.iterations))
