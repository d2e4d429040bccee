"""The ``backbone`` group: the teacher/student model, its LoRA, schedulers and discriminator head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from flash_exp.config.errors import ConfigError, one_of, positive

PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
FAMILIES = ("sd", "sdxl", "pixart", "sd3", "flux")
NULL_CONDITIONS = ("empty_prompt", "zero", "negative_prompt")
DTYPES = ("float32", "bfloat16", "float16")


def train_timestep_range(prediction: str, num_train_timesteps: int = 1000) -> tuple[int, int]:
    """The integer timesteps (first, last) a teacher of this parametrisation trains on, unshifted.

    Flow matching: 1..T, as ``FlowMatchEulerDiscreteScheduler`` builds its schedule (``linspace(1, T, T)``,
    sigma = t / T before the shift), so sigma = 1 is on the grid and sigma = 0 is not. Diffusion
    (``epsilon``, ``v_prediction``): 0..T - 1, the DDPM-style schedulers' ``alphas_cumprod`` indices.
    """
    first = 1 if prediction == "flow" else 0
    return first, first + num_train_timesteps - 1


@dataclass
class LoraConfig:
    """LoRA adapter of the student. ``alpha`` is explicit: the scale is alpha / rank."""

    rank: int = 64
    alpha: float = 64.0
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    init: str = "gaussian"  # peft `init_lora_weights`: "gaussian" or "default" (kaiming, B = 0)


@dataclass
class SchedulerConfig:
    """A diffusers scheduler class by name plus constructor overrides (merged onto the model's own)."""

    name: str = "DPMSolverMultistepScheduler"
    timestep_spacing: str = "trailing"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherSamplingConfig:
    """The teacher's own full sampling budget (baselines and sample grids)."""

    scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(name="EulerDiscreteScheduler", timestep_spacing="leading")
    )
    steps: int = 25
    guidance: float = 7.5


DISCRIMINATOR_HEADS = ("flash_sd15", "flash_strided", "generic")
DISCRIMINATOR_INPUTS = ("features", "output")


@dataclass
class DiscriminatorConfig:
    """Discriminator head on the frozen teacher at the re-noised sample.

    ``input``: ``features``, the output of ``feature_module`` taken by a forward hook (a UNet block's
    map, or a transformer block's image tokens), or ``output``, the teacher's own prediction (eps / v),
    as the released Flash PixArt and Flash SD3 were trained. ``head``: the architecture, see
    :mod:`flash_exp.method.discriminator`; ``channels`` its widths.
    """

    input: str = "features"
    feature_module: str = "mid_block"
    head: str = "generic"
    channels: list[int] = field(default_factory=lambda: [64, 128])


@dataclass
class BackboneConfig:
    name: str = "toy"
    family: str = "sd"
    pretrained: str = MISSING  # hub id or local directory
    revision: str | None = None
    variant: str | None = None
    dtype: str = "float32"
    prediction: str = "epsilon"
    resolution: int = 32
    null_condition: str = "empty_prompt"
    negative_prompt: str = ""
    gradient_checkpointing: bool = False
    guidance_range: list[float] = field(default_factory=lambda: [3.0, 13.0])  # teacher CFG, drawn U[min, max]
    # the guidance input a guidance-distilled teacher's student is trained and sampled with (FLUX.1-dev's
    # embedding); 0 for CFG teachers, whose students sample without guidance
    student_guidance: float = 0.0
    lora: LoraConfig = field(default_factory=LoraConfig)
    teacher_scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    student_scheduler: SchedulerConfig = field(
        default_factory=lambda: SchedulerConfig(name="LCMScheduler", timestep_spacing="trailing")
    )
    teacher_sampling: TeacherSamplingConfig = field(default_factory=TeacherSamplingConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    sigma_data: float = 0.5  # boundary-condition scalings of the student
    timestep_scaling: float = 10.0  # c_skip/c_out use (t * timestep_scaling), i.e. t / 0.1

    def __post_init__(self) -> None:
        one_of("backbone.family", self.family, FAMILIES)
        one_of("backbone.dtype", self.dtype, DTYPES)
        one_of("backbone.prediction", self.prediction, PREDICTION_TYPES)
        one_of("backbone.null_condition", self.null_condition, NULL_CONDITIONS)
        positive("backbone.resolution", self.resolution)
        if self.lora.rank <= 0:
            raise ConfigError("backbone.lora.rank", self.lora.rank, "must be a positive integer")
        positive("backbone.lora.alpha", self.lora.alpha)
        if not self.lora.targets:
            raise ConfigError("backbone.lora.targets", self.lora.targets, "must name at least one module")
        one_of("backbone.lora.init", self.lora.init, ("gaussian", "default"))
        if len(self.guidance_range) != 2 or self.guidance_range[0] > self.guidance_range[1]:
            raise ConfigError(
                "backbone.guidance_range", list(self.guidance_range), "must be [min, max] with min <= max"
            )
        if self.guidance_range[0] < 0:
            raise ConfigError("backbone.guidance_range", list(self.guidance_range), "must be >= 0")
        if self.student_guidance < 0:
            raise ConfigError("backbone.student_guidance", self.student_guidance, "must be >= 0")
        positive("backbone.teacher_sampling.steps", self.teacher_sampling.steps)
        one_of("backbone.discriminator.input", self.discriminator.input, DISCRIMINATOR_INPUTS)
        one_of("backbone.discriminator.head", self.discriminator.head, DISCRIMINATOR_HEADS)
        if not self.discriminator.channels or any(c <= 0 for c in self.discriminator.channels):
            raise ConfigError("backbone.discriminator.channels", list(self.discriminator.channels),
                              "needs one or more positive widths")
        if self.discriminator.head != "generic" and any(c % 4 for c in self.discriminator.channels[1:]):
            raise ConfigError("backbone.discriminator.channels", list(self.discriminator.channels),
                              "the flash heads' GroupNorm(4) needs widths divisible by 4 after the first")
