"""Flash's ``loss``, ``timesteps`` and ``phases`` groups, and the ``method`` group (flash, lcm, dmd2)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from flash_exp.config.errors import ConfigError, one_of, positive

DISTILL_LOSS_TYPES = ("l2", "l1", "lpips")
GAN_LOSS_TYPES = ("lsgan", "hinge", "vanilla", "non-saturating", "wgan")
TIMESTEP_DISTRIBUTIONS = ("uniform", "gaussian", "mixture", "modes")
REAL_SOURCES = ("data", "teacher")
METHODS = ("flash", "lcm", "dmd2")
LCM_LOSSES = ("huber", "l2")
DIFFUSION_FAMILIES = ("sd", "sdxl", "pixart")


@dataclass
class DistillLossConfig:
    type: str = "lpips"
    weight: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    lpips_crop: int = 64  # side of the central latent crop decoded for LPIPS
    lpips_weights: str | None = None  # local VGG16 weights file; default: torchvision's cache


@dataclass
class AdversarialLossConfig:
    enabled: bool = True
    type: str = "lsgan"
    weight: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3])
    # noise levels of the re-noised real and fake samples, on the unshifted [0, 1000) grid (a shifted
    # flow schedule, SD3, reads them through its shift as the official code: 10/250/500/750 -> sigma
    # 0.029/0.5/0.75/0.9)
    timesteps: list[int] = field(default_factory=lambda: [10, 250, 500, 750])
    real: str = "data"  # "data": encoded dataset latents; "teacher": the teacher's x0
    wgan_clip: float = 0.01
    train_in_warmup: bool = True  # the discriminator learns while its weight is still 0 (official code)


@dataclass
class DMDLossConfig:
    enabled: bool = True
    weight: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.5, 0.7])
    # bounds of the re-noising timestep on the teacher's unshifted training grid (a shifted flow
    # schedule, SD3, reads the draw through its shift); null: the whole grid, as the official draws:
    # 0..999 for a diffusion teacher, 1..1000 for flow matching (config.train_timestep_range)
    min_timestep: int | None = None
    max_timestep: int | None = None


@dataclass
class LossConfig:
    distill: DistillLossConfig = field(default_factory=DistillLossConfig)
    adversarial: AdversarialLossConfig = field(default_factory=AdversarialLossConfig)
    dmd: DMDLossConfig = field(default_factory=DMDLossConfig)

    def __post_init__(self) -> None:
        one_of("loss.distill.type", self.distill.type, DISTILL_LOSS_TYPES)
        one_of("loss.adversarial.type", self.adversarial.type, GAN_LOSS_TYPES)
        one_of("loss.adversarial.real", self.adversarial.real, REAL_SOURCES)
        for key, weights in (
            ("loss.distill.weight", self.distill.weight),
            ("loss.adversarial.weight", self.adversarial.weight),
            ("loss.dmd.weight", self.dmd.weight),
        ):
            if any(w < 0 for w in weights):
                raise ConfigError(key, list(weights), "weights must be >= 0")
        if not self.adversarial.timesteps or any(not 0 <= t < 1000 for t in self.adversarial.timesteps):
            raise ConfigError(
                "loss.adversarial.timesteps", list(self.adversarial.timesteps), "a non-empty list in [0, 999]"
            )


@dataclass
class TimestepsConfig:
    """Distribution pi over the K teacher-timestep indices (index 0 = most noisy)."""

    distribution: str = "mixture"
    num_modes: int = 4
    variance: float = 0.5  # of the mixture components, in index units squared
    mode_probs: list[Any] = field(  # one row of num_modes probabilities per phase
        default_factory=lambda: [
            [0.0, 0.0, 0.5, 0.5],
            [0.1, 0.3, 0.3, 0.3],
            [0.25, 0.25, 0.25, 0.25],
            [0.4, 0.2, 0.2, 0.2],
        ]
    )
    gaussian_mean: float | None = None  # index units; default K / 2
    gaussian_variance: float | None = None  # index units squared; default K
    per_sample: bool = False  # False: one index per batch, as the paper

    def __post_init__(self) -> None:
        one_of("timesteps.distribution", self.distribution, TIMESTEP_DISTRIBUTIONS)
        if self.num_modes <= 0:
            raise ConfigError("timesteps.num_modes", self.num_modes, "must be a positive integer")
        positive("timesteps.variance", self.variance)
        if self.gaussian_variance is not None:
            positive("timesteps.gaussian_variance", self.gaussian_variance)
        for i, row in enumerate(self.mode_probs):
            key = f"timesteps.mode_probs[{i}]"
            if not isinstance(row, list) or not all(isinstance(p, int | float) for p in row):
                raise ConfigError(key, row, "each phase needs a list of probabilities")
            self.mode_probs[i] = row = [float(p) for p in row]
            if len(row) != self.num_modes:
                raise ConfigError(key, list(row), f"needs one probability per mode ({self.num_modes} values)")
            if any(p < 0 for p in row) or not math.isclose(sum(row), 1.0, abs_tol=1e-6):
                raise ConfigError(key, list(row), "probabilities must be >= 0 and sum to 1")


@dataclass
class PhasesConfig:
    """The training phases. ``iterations`` counts data batches (one generator + one discriminator update);
    the official code counts two per batch, so its 5,000 iterations per phase are 2,500 here."""

    names: list[str] = field(default_factory=lambda: ["warmup", "phase1", "phase2", "phase3"])
    k: list[int] = field(default_factory=lambda: [32, 32, 32, 32])
    iterations: list[int] = field(default_factory=lambda: [2500, 2500, 2500, 2500])

    def __post_init__(self) -> None:
        if not self.k:
            raise ConfigError("phases.k", list(self.k), "needs one value per phase")
        for i, k in enumerate(self.k):
            if k <= 0:
                raise ConfigError(f"phases.k[{i}]", k, "K must be a positive integer")
        for i, n in enumerate(self.iterations):
            if n <= 0:
                raise ConfigError(f"phases.iterations[{i}]", n, "must be a positive integer")




@dataclass
class LCMConfig:
    """Latent consistency distillation (``method=lcm``), as the diffusers LCM-LoRA scripts.

    ``guidance_range``: the teacher's CFG scale w, drawn per sample, in this project's convention
    out_null + w * (out_cond - out_null) (the scripts' w is ours minus 1); null: ``backbone.guidance_range``.
    """

    num_ddim_timesteps: int = 50  # the skipping-step solver's grid: every (T / 50)-th training timestep
    guidance_range: list[float] | None = None
    loss: str = "huber"
    huber_c: float = 0.001

    def check(self) -> None:
        if self.num_ddim_timesteps <= 0 or 1000 % self.num_ddim_timesteps:
            raise ConfigError("method.lcm.num_ddim_timesteps", self.num_ddim_timesteps, "must divide 1000")
        if self.guidance_range is not None and (
            len(self.guidance_range) != 2 or not 0 <= self.guidance_range[0] <= self.guidance_range[1]
        ):
            raise ConfigError("method.lcm.guidance_range", list(self.guidance_range),
                              "must be null or [min, max] with 0 <= min <= max")
        one_of("method.lcm.loss", self.loss, LCM_LOSSES)
        positive("method.lcm.huber_c", self.huber_c)


@dataclass
class DMD2Config:
    """DMD2 (``method=dmd2``), as tianweiy/DMD2: a fake score (a second LoRA on the same base) trained
    with the denoising loss on the student's samples, the distribution-matching gradient with the
    teacher's CFG score as real, and a GAN head on the fake score's features.

    ``num_denoising_step``: the student's fixed timesteps are its scheduler's at this many steps (see
    :func:`dmd2_student_scheduler`; on a diffusion backbone 999, 749, 499, 249 for 4). ``real_guidance``:
    the teacher's CFG scale of the real score (null: ``backbone.teacher_sampling.guidance``).
    ``fake_updates``: fake-score updates per generator update (DMD2's ``dfake_gen_update_ratio``).
    """

    num_denoising_step: int = 4
    backward_simulation: bool = True
    real_guidance: float | None = None
    fake_updates: int = 5
    min_timestep: int = 20  # DMD2's min_step_percent 0.02
    max_timestep: int = 980  # and max_step_percent 0.98
    gan: bool = True
    gen_gan_weight: float = 1e-3  # DMD2's gen_cls_loss_weight (SD1.5)
    fake_gan_weight: float = 1e-2  # DMD2's guidance_cls_loss_weight

    def check(self) -> None:
        if self.num_denoising_step <= 0:
            raise ConfigError("method.dmd2.num_denoising_step", self.num_denoising_step, "must be a positive integer")
        if self.real_guidance is not None and self.real_guidance < 0:
            raise ConfigError("method.dmd2.real_guidance", self.real_guidance, "must be null or >= 0")
        if self.fake_updates <= 0:
            raise ConfigError("method.dmd2.fake_updates", self.fake_updates, "must be a positive integer")
        if not 0 <= self.min_timestep <= self.max_timestep < 1000:
            raise ConfigError("method.dmd2.min_timestep/max_timestep", [self.min_timestep, self.max_timestep],
                              "need 0 <= min <= max <= 999")
        for key in ("gen_gan_weight", "fake_gan_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"method.dmd2.{key}", getattr(self, key), "must be >= 0")


def dmd2_student_scheduler(prediction: str, key: str) -> Any:
    """``${dmd2_student_scheduler:${backbone.prediction},KEY}``: ``KEY`` (``name``, ``timestep_spacing``,
    ``kwargs``) of the ``backbone.student_scheduler`` of DMD2's student. A diffusion
    backbone (``epsilon``, ``v_prediction``): the recipe's x0 prediction, then fresh noise at the next of
    DMD2's fixed timesteps (``LCMScheduler`` over all 1000 training timesteps: 999, 749, 499, 249 at 4
    steps; 999 at 1). Flow matching: the stock Euler sampler its Flash student samples with, so the
    exported LoRA loads into the plain pipeline alike."""
    if prediction == "flow":
        sampler = {"name": "FlowMatchEulerDiscreteScheduler", "timestep_spacing": "linspace", "kwargs": {}}
    else:
        sampler = {"name": "LCMScheduler", "timestep_spacing": "leading", "kwargs": {"original_inference_steps": 1000}}
    return sampler[key]


@dataclass
class MethodConfig:
    """The distillation method (``conf/method/<name>.yaml``). Flash's own settings are the ``loss``,
    ``timesteps`` and ``phases`` groups; ``lcm`` and ``dmd2`` carry theirs in ``method.lcm`` and
    ``method.dmd2`` (see :class:`LCMConfig`, :class:`DMD2Config`). A setting of a method other than
    ``name``, or a key its section does not have, is rejected."""

    name: str = "flash"
    lcm: dict[str, Any] = field(default_factory=dict)
    dmd2: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        one_of("method.name", self.name, METHODS)
        for other, schema in (("lcm", LCMConfig), ("dmd2", DMD2Config)):
            section = getattr(self, other)
            if other != self.name and section:
                mine = f"method.{self.name}.*" if self.name != "flash" else "the loss, timesteps and phases groups"
                raise ConfigError(f"method.{other}.{next(iter(section))}", section[next(iter(section))],
                                  f"is a setting of method={other}; method={self.name} takes {mine}")
            unknown = sorted(set(section) - set(schema.__dataclass_fields__))
            if unknown:
                raise ConfigError(f"method.{other}.{unknown[0]}", section[unknown[0]],
                                  f"method={other} has the settings {', '.join(schema.__dataclass_fields__)}")
        if self.name == "lcm":
            self.lcm_settings().check()
        if self.name == "dmd2":
            self.dmd2_settings().check()

    def lcm_settings(self) -> LCMConfig:
        return self._typed_section("lcm", LCMConfig)

    def dmd2_settings(self) -> DMD2Config:
        return self._typed_section("dmd2", DMD2Config)

    def _typed_section(self, name: str, schema: type) -> Any:
        """``method.<name>`` as its dataclass, each value converted to the field's type (``"50"`` -> 50);
        a value that does not convert is a :class:`ConfigError` naming the key and the type."""
        from omegaconf.errors import ValidationError

        section = getattr(self, name)
        try:
            return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), section))
        except ValidationError as err:
            key = str(err.key)
            raise ConfigError(f"method.{name}.{key}", section.get(key, "?"),
                              f"must be of type {schema.__dataclass_fields__[key].type}") from None
