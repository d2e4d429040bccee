"""Typed configuration schemas, their validation, and their registration in Hydra's ConfigStore.

Every group of ``conf/`` has a dataclass here. Hydra merges the YAML files onto these schemas, so a
wrong *type* fails during composition; :func:`validate` then checks every *value* (ranges, list
lengths per phase, names) and raises :class:`ConfigError` naming the key, the value and what is
allowed. Both happen before any weight is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

DISTILL_LOSS_TYPES = ("l2", "l1", "lpips")
GAN_LOSS_TYPES = ("lsgan", "hinge", "vanilla", "non-saturating", "wgan")
TIMESTEP_DISTRIBUTIONS = ("uniform", "gaussian", "mixture", "modes")
PREDICTION_TYPES = ("epsilon", "v_prediction", "flow")
FAMILIES = ("sd", "sdxl", "pixart", "sd3")
NULL_CONDITIONS = ("empty_prompt", "zero", "negative_prompt")
DTYPES = ("float32", "bfloat16", "float16")
REAL_SOURCES = ("data", "teacher")
TASKS = ("t2i", "inpainting", "superres", "adapter_canny", "faceswap")
DATA_KINDS = ("webdataset", "folder")
# Lightning's precision and accelerator names (lightning.fabric's _PRECISION_INPUT and accelerator registry)
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key, value and allowed set."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config value {key}={value!r}: {allowed}")


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(key, value, f"allowed values are {', '.join(allowed)}")


def _positive(key: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(key, value, "must be > 0")


COMMAND_URL_SCHEMES = ("pipe",)  # webdataset opens these by running the rest of the URL in a shell


def refuse_command_urls(key: str, urls: Iterable[str], allowed: bool) -> None:
    """Raise :class:`ConfigError` for the first shard URL that webdataset would open by running a shell
    command (``pipe:CMD``), unless ``allowed`` (``data.allow_command_urls``)."""
    if allowed:
        return
    for url in urls:
        if urlparse(str(url)).scheme in COMMAND_URL_SCHEMES:
            raise ConfigError(key, url, "a pipe: URL runs its text as a shell command; refused unless "
                                        "data.allow_command_urls=true (only for shard lists you wrote yourself)")


# --------------------------------------------------------------------------------------------- backbone
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
        _one_of("backbone.family", self.family, FAMILIES)
        _one_of("backbone.dtype", self.dtype, DTYPES)
        _one_of("backbone.prediction", self.prediction, PREDICTION_TYPES)
        _one_of("backbone.null_condition", self.null_condition, NULL_CONDITIONS)
        _positive("backbone.resolution", self.resolution)
        if self.lora.rank <= 0:
            raise ConfigError("backbone.lora.rank", self.lora.rank, "must be a positive integer")
        _positive("backbone.lora.alpha", self.lora.alpha)
        if not self.lora.targets:
            raise ConfigError("backbone.lora.targets", self.lora.targets, "must name at least one module")
        _one_of("backbone.lora.init", self.lora.init, ("gaussian", "default"))
        if len(self.guidance_range) != 2 or self.guidance_range[0] > self.guidance_range[1]:
            raise ConfigError(
                "backbone.guidance_range", list(self.guidance_range), "must be [min, max] with min <= max"
            )
        if self.guidance_range[0] < 0:
            raise ConfigError("backbone.guidance_range", list(self.guidance_range), "must be >= 0")
        _positive("backbone.teacher_sampling.steps", self.teacher_sampling.steps)
        _one_of("backbone.discriminator.input", self.discriminator.input, DISCRIMINATOR_INPUTS)
        _one_of("backbone.discriminator.head", self.discriminator.head, DISCRIMINATOR_HEADS)
        if not self.discriminator.channels or any(c <= 0 for c in self.discriminator.channels):
            raise ConfigError("backbone.discriminator.channels", list(self.discriminator.channels),
                              "needs one or more positive widths")
        if self.discriminator.head != "generic" and any(c % 4 for c in self.discriminator.channels[1:]):
            raise ConfigError("backbone.discriminator.channels", list(self.discriminator.channels),
                              "the flash heads' GroupNorm(4) needs widths divisible by 4 after the first")


# --------------------------------------------------------------------------------------------- task
MASK_KINDS = ("mixed", "box", "stroke")


def _fraction_range(key: str, value: list[float], low: float = 0.0, high: float = 1.0) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ConfigError(key, list(value), f"must be [min, max] with {low} <= min <= max <= {high}")


@dataclass
class MaskConfig:
    """Inpainting masks drawn on the fly in the data pipeline (1 = region to fill)."""

    kind: str = "mixed"  # "box", "stroke" (free-form brush strokes) or "mixed" (box with box_prob)
    coverage: list[float] = field(default_factory=lambda: [0.1, 0.5])  # fraction of the image, drawn U[min, max]
    box_prob: float = 0.5  # "mixed": probability of a box, else strokes
    stroke_width: list[float] = field(default_factory=lambda: [0.05, 0.15])  # brush width / image side
    max_strokes: int = 8

    def check(self) -> None:
        _one_of("task.mask.kind", self.kind, MASK_KINDS)
        _fraction_range("task.mask.coverage", self.coverage)
        if self.coverage[1] <= 0:
            raise ConfigError("task.mask.coverage", list(self.coverage), "the maximum must be > 0")
        _fraction_range("task.mask.box_prob", [self.box_prob, self.box_prob])
        _fraction_range("task.mask.stroke_width", self.stroke_width)
        if self.max_strokes <= 0:
            raise ConfigError("task.mask.max_strokes", self.max_strokes, "must be a positive integer")


@dataclass
class DegradationConfig:
    """Super-resolution inputs: blur, downscale by ``scale``, add noise (data pipeline), then the
    x4-upscaler noise augmentation of the low-res image at ``noise_level`` (its ``class_labels``)."""

    scale: int = 4
    blur_sigma: list[float] = field(default_factory=lambda: [0.0, 0.0])  # Gaussian blur before downscaling, px
    noise_std: list[float] = field(default_factory=lambda: [0.0, 0.0])  # Gaussian noise on the low-res, [-1, 1]
    noise_level: int = 20  # the StableDiffusionUpscalePipeline default
    max_noise_level: int = 350

    def check(self) -> None:
        if self.scale < 1:
            raise ConfigError("task.degradation.scale", self.scale, "must be an integer >= 1")
        _fraction_range("task.degradation.blur_sigma", self.blur_sigma, 0.0, 100.0)
        _fraction_range("task.degradation.noise_std", self.noise_std, 0.0, 2.0)
        if not 0 <= self.noise_level <= self.max_noise_level:
            raise ConfigError("task.degradation.noise_level", self.noise_level,
                              f"must be in [0, max_noise_level={self.max_noise_level}]")


@dataclass
class CannyConfig:
    """Canny edge maps computed in the data pipeline (torch; thresholds on the 0..255 gradient scale)."""

    low_threshold: float = 100.0
    high_threshold: float = 200.0
    blur_sigma: float = 1.0  # Gaussian blur before the Sobel gradients; 0 = none
    detect_resolution: int | None = 384  # edges found at this side, then resized to the image; null = image

    def check(self) -> None:
        if not 0 <= self.low_threshold <= self.high_threshold:
            raise ConfigError("task.canny.low_threshold/high_threshold",
                              [self.low_threshold, self.high_threshold], "need 0 <= low <= high")
        if self.blur_sigma < 0:
            raise ConfigError("task.canny.blur_sigma", self.blur_sigma, "must be >= 0")
        if self.detect_resolution is not None:
            _positive("task.canny.detect_resolution", self.detect_resolution)


@dataclass
class AdapterConfig:
    """A frozen diffusers ``T2IAdapter`` (hub id or local directory) and its residual scale."""

    pretrained: str | None = None
    subfolder: str | None = None
    conditioning_scale: float = 0.8

    def check(self) -> None:
        if self.conditioning_scale < 0:
            raise ConfigError("task.adapter.conditioning_scale", self.conditioning_scale, "must be >= 0")


@dataclass
class IdentityConfig:
    """Face swapping: the reference encoder (``image_encoder/``, a CLIPVisionModelWithProjection) and
    its token projection (``image_projection/``) inside ``pretrained`` (default: the teacher)."""

    pretrained: str | None = None
    reference_size: int = 224  # side of the reference image fed to the encoder
    face_key: str = "face_box"  # json key of the target's face box [x0, y0, x1, y1] (fractions)
    reference_key: str = "ref.jpg"  # sample key of the reference identity image
    mask_margin: float = 0.1  # the face box grown by this fraction of its side on each edge

    def check(self) -> None:
        _positive("task.identity.reference_size", self.reference_size)
        _fraction_range("task.identity.mask_margin", [self.mask_margin, self.mask_margin])


@dataclass
class TaskConfig:
    """What a task adds to the batch and to the condition. The teacher of a (task, backbone) pair is
    set by ``conf/task_backbone/<task>_<backbone>.yaml`` (a Hydra specialisation in the defaults list),
    so a command-line ``backbone.pretrained=...`` always wins."""

    name: str = "t2i"
    supported_families: list[str] = field(default_factory=lambda: list(FAMILIES))
    options: dict[str, Any] = field(default_factory=dict)
    mask: MaskConfig = field(default_factory=MaskConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    canny: CannyConfig = field(default_factory=CannyConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    # shards of the conditions shown in the sample grids and scored by the restoration metrics;
    # empty: the first samples of data.shards
    grid_shards: list[str] = field(default_factory=list)
    num_grid_samples: int = 4

    def __post_init__(self) -> None:
        _one_of("task.name", self.name, TASKS)
        for family in self.supported_families:
            _one_of("task.supported_families", family, FAMILIES)
        self.mask.check()
        self.degradation.check()
        self.canny.check()
        self.adapter.check()
        self.identity.check()
        _positive("task.num_grid_samples", self.num_grid_samples)


# --------------------------------------------------------------------------------------------- loss
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
    min_timestep: int = 0
    max_timestep: int = 999


@dataclass
class LossConfig:
    distill: DistillLossConfig = field(default_factory=DistillLossConfig)
    adversarial: AdversarialLossConfig = field(default_factory=AdversarialLossConfig)
    dmd: DMDLossConfig = field(default_factory=DMDLossConfig)

    def __post_init__(self) -> None:
        _one_of("loss.distill.type", self.distill.type, DISTILL_LOSS_TYPES)
        _one_of("loss.adversarial.type", self.adversarial.type, GAN_LOSS_TYPES)
        _one_of("loss.adversarial.real", self.adversarial.real, REAL_SOURCES)
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
        if not 0 <= self.dmd.min_timestep <= self.dmd.max_timestep < 1000:
            raise ConfigError(
                "loss.dmd.min_timestep/max_timestep",
                [self.dmd.min_timestep, self.dmd.max_timestep],
                "need 0 <= min <= max <= 999",
            )


# --------------------------------------------------------------------------------------------- timesteps
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
        _one_of("timesteps.distribution", self.distribution, TIMESTEP_DISTRIBUTIONS)
        if self.num_modes <= 0:
            raise ConfigError("timesteps.num_modes", self.num_modes, "must be a positive integer")
        _positive("timesteps.variance", self.variance)
        if self.gaussian_variance is not None:
            _positive("timesteps.gaussian_variance", self.gaussian_variance)
        for i, row in enumerate(self.mode_probs):
            key = f"timesteps.mode_probs[{i}]"
            if not isinstance(row, list) or not all(isinstance(p, int | float) for p in row):
                raise ConfigError(key, row, "each phase needs a list of probabilities")
            self.mode_probs[i] = row = [float(p) for p in row]
            if len(row) != self.num_modes:
                raise ConfigError(key, list(row), f"needs one probability per mode ({self.num_modes} values)")
            if any(p < 0 for p in row) or not math.isclose(sum(row), 1.0, abs_tol=1e-6):
                raise ConfigError(key, list(row), "probabilities must be >= 0 and sum to 1")


# --------------------------------------------------------------------------------------------- phases
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


# --------------------------------------------------------------------------------------------- method
METHODS = ("flash", "lcm", "dmd2")
LCM_LOSSES = ("huber", "l2")
DIFFUSION_FAMILIES = ("sd", "sdxl", "pixart")


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
        _one_of("method.lcm.loss", self.loss, LCM_LOSSES)
        _positive("method.lcm.huber_c", self.huber_c)


@dataclass
class DMD2Config:
    """DMD2 (``method=dmd2``), as tianweiy/DMD2: a fake score (a second LoRA on the same base) trained
    with the denoising loss on the student's samples, the distribution-matching gradient with the
    teacher's CFG score as real, and a GAN head on the fake score's features.

    ``num_denoising_step``: the student's fixed timesteps are its scheduler's at this many steps (the
    LCMScheduler with ``original_inference_steps=1000``: 999, 749, 499, 249 for 4). ``real_guidance``:
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
        _one_of("method.name", self.name, METHODS)
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
        return LCMConfig(**self.lcm)

    def dmd2_settings(self) -> DMD2Config:
        return DMD2Config(**self.dmd2)


# --------------------------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    shards: list[str] = MISSING  # brace-expandable webdataset urls or local tar paths
    kind: str = "webdataset"  # "webdataset": data.shards; "folder": images and captions under data.root
    root: str | None = None  # data=folder: the directory (README "Your own data")
    files_per_shard: int = 1000  # data=folder: files read as one shard (make_shards --shard-size)
    batch_size: int = 4  # per device
    num_workers: int = 0
    shuffle_buffer: int = 1000
    resampled: bool = False  # sample shards with replacement (multi-node)
    min_aesthetic_score: float | None = 6.0
    image_key: str = "jpg;png;jpeg;webp"
    caption_key: str = "caption"
    crop_size: int | None = None  # centre crop before resize; default: the shorter side
    prompts: list[str] = field(default_factory=list)  # fixed prompts of the sample grids
    cached: bool = False  # shards hold latents and text embeddings (python -m flash_exp.data.cache_latents)
    max_consecutive_rejects: int = 10_000  # stop the stream after this many rejected samples in a row
    # true: shard URLs "pipe:CMD" run CMD in a shell (webdataset's pipe: scheme); false refuses them
    allow_command_urls: bool = False
    overfit_batches: int = 0  # > 0: train on the stream's first N batches, repeated (debug=overfit)

    def __post_init__(self) -> None:
        _one_of("data.kind", self.kind, DATA_KINDS)
        if self.batch_size <= 0:
            raise ConfigError("data.batch_size", self.batch_size, "must be a positive integer")
        if self.overfit_batches < 0:
            raise ConfigError("data.overfit_batches", self.overfit_batches, "must be >= 0 (0: no repetition)")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers", self.num_workers, "must be >= 0")
        if self.kind == "folder":
            self._check_folder()
        elif not self.shards:
            raise ConfigError("data.shards", list(self.shards), "name at least one webdataset shard (path, brace "
                                                                "pattern or URL)")
        self._check_stream()

    def _check_folder(self) -> None:
        from pathlib import Path

        if not self.root:
            raise ConfigError("data.root", self.root, "data=folder needs data.root=DIR, a directory of images "
                              "and captions (README \"Your own data\")")
        if not Path(self.root).expanduser().is_dir():
            raise ConfigError("data.root", self.root, "is not a directory")
        if self.cached:
            raise ConfigError("data.cached", True, "reads latent-cache shards, not a folder: cache the folder "
                              "with python -m flash_exp.data.cache_latents data=folder data.root=DIR, then "
                              "train on the shards it prints with data.cached=true, without data=folder")
        _positive("data.files_per_shard", self.files_per_shard)

    def _check_stream(self) -> None:
        if self.crop_size is not None and self.crop_size <= 0:
            raise ConfigError("data.crop_size", self.crop_size, "must be a positive number of pixels, or null")
        if self.max_consecutive_rejects <= 0:
            raise ConfigError("data.max_consecutive_rejects", self.max_consecutive_rejects,
                              "must be a positive integer")
        refuse_command_urls("data.shards", self.shards, self.allow_command_urls)


# --------------------------------------------------------------------------------------------- trainer
EIGHT_BIT_MISSING = ("needs bitsandbytes (AdamW8bit), which is not installed: pip install bitsandbytes, "
                     "or set trainer.optim.eight_bit=false")


@dataclass
class OptimConfig:
    lr: float = 1e-5
    lr_discriminator: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eight_bit: bool = False  # bitsandbytes AdamW8bit (optimiser states in 8 bits); not a dependency

    def __post_init__(self) -> None:
        _positive("trainer.optim.lr", self.lr)
        _positive("trainer.optim.lr_discriminator", self.lr_discriminator)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError("trainer.optim.betas", list(self.betas), "needs two values, each in [0, 1)")
        if not 0.0 <= self.weight_decay:
            raise ConfigError("trainer.optim.weight_decay", self.weight_decay, "must be >= 0")
        if self.eight_bit and importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("trainer.optim.eight_bit", True, EIGHT_BIT_MISSING)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int | None = None  # default: the sum of phases.iterations
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 10
    sample_nfe: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_sample_prompts: int = 4
    resume: str = "auto"  # "auto": continue from <run>/checkpoints/last.ckpt when it exists; "never"
    keep_checkpoints: int | None = None  # the N latest step_*.ckpt are kept (plus last.ckpt); null: all
    wandb: bool = False  # replaced by the logger group; kept only to point old command lines there
    compile_teacher: bool = False  # torch.compile the teacher's no-grad calls (the K-step rollout)
    offload_frozen: bool = False  # VAE encoder and text encoders on CPU, on the GPU only while encoding
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        _one_of("trainer.resume", self.resume, ("auto", "never"))
        _one_of("trainer.precision", str(self.precision), PRECISIONS)
        _one_of("trainer.accelerator", str(self.accelerator), ACCELERATORS)
        for key, value in (("trainer.devices", self.devices), ("trainer.num_nodes", self.num_nodes)):
            if value < 1:
                raise ConfigError(key, value, "must be a positive integer")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError("trainer.max_steps", self.max_steps, "must be a positive integer or null")
        if self.accumulate_grad_batches != 1:
            raise ConfigError(
                "trainer.accumulate_grad_batches",
                self.accumulate_grad_batches,
                "only 1 is supported (manual optimisation steps once per data batch)",
            )
        if not self.sample_nfe or any(n <= 0 for n in self.sample_nfe):
            raise ConfigError("trainer.sample_nfe", list(self.sample_nfe), "positive step counts")
        if self.wandb:
            raise ConfigError("trainer.wandb", True, "trackers are the logger group now: use logger=wandb")
        if self.keep_checkpoints is not None and self.keep_checkpoints <= 0:
            raise ConfigError("trainer.keep_checkpoints", self.keep_checkpoints,
                              "must be a positive integer (the latest N step checkpoints besides last.ckpt) "
                              "or null (keep all)")


# --------------------------------------------------------------------------------------------- logger
# tracker name -> the pip package it needs (None: always available)
TRACKER_PACKAGES: dict[str, str | None] = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb",
                                           "mlflow": "mlflow"}


@dataclass
class LoggerConfig:
    """Experiment trackers (``conf/logger/``): metrics, hyper-parameters and the sample grids as images.
    wandb and mlflow are not dependencies; choosing one that is not installed fails at validation."""

    trackers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    project: str = "flash_exp"  # wandb project / MLflow experiment name
    tracking_uri: str | None = None  # MLflow; null: file:<run dir>/mlruns
    offline: bool = False  # wandb: write locally, sync later with `wandb sync`
    log_images: bool = True  # send the sample grids to the trackers that take images

    def __post_init__(self) -> None:
        if not self.trackers:
            raise ConfigError("logger.trackers", list(self.trackers), "name at least one tracker, e.g. [csv]")
        for name in self.trackers:
            _one_of("logger.trackers", name, tuple(TRACKER_PACKAGES))
            package = TRACKER_PACKAGES[name]
            if package is not None and importlib.util.find_spec(package) is None:
                raise ConfigError("logger.trackers", name, f"needs the {package} package, which is not "
                                  f"installed: pip install {package}, or choose another logger (csv, tensorboard)")


# --------------------------------------------------------------------------------------------- eval
@dataclass
class EvalConfig:
    """Which benchmarks to score after training (``after_train``) and by ``make eval``."""

    benchmarks: list[str] = field(default_factory=lambda: ["toy"])
    after_train: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # keys of conf/evaluate.yaml for the evaluation after training (student_nfe, device, cache_dir, ...)
    settings: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- root
@dataclass
class TrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    timesteps: TimestepsConfig = field(default_factory=TimestepsConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    run_name: str = "flash"

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", self.seed, f"must be in [0, {MAX_SEED}]")
        mean = self.timesteps.gaussian_mean
        if mean is not None and not 0 <= mean <= min(self.phases.k) - 1:
            raise ConfigError("timesteps.gaussian_mean", mean, "index units: must be in [0, K - 1] for every "
                                                               f"phase (phases.k={list(self.phases.k)})")
        n = len(self.phases.k)
        for key, values in (
            ("phases.iterations", self.phases.iterations),
            ("phases.names", self.phases.names),
            ("timesteps.mode_probs", self.timesteps.mode_probs),
            ("loss.distill.weight", self.loss.distill.weight),
            ("loss.adversarial.weight", self.loss.adversarial.weight),
            ("loss.dmd.weight", self.loss.dmd.weight),
        ):
            if len(values) != n:
                raise ConfigError(
                    key, list(values), f"needs one entry per phase: {n} (the length of phases.k)"
                )
        if self.timesteps.distribution in ("mixture", "modes"):
            for i, k in enumerate(self.phases.k):
                if k < self.timesteps.num_modes:
                    raise ConfigError(
                        f"phases.k[{i}]",
                        k,
                        f"must be >= timesteps.num_modes ({self.timesteps.num_modes}) for a "
                        f"{self.timesteps.distribution} distribution",
                    )
        if self.backbone.family not in self.task.supported_families:
            names = backbones_of_families(self.task.supported_families)
            raise ConfigError(
                "task",
                self.task.name,
                f"does not run on backbone family {self.backbone.family!r} (backbone={self.backbone.name}); "
                f"supported: {', '.join(self.task.supported_families)}"
                + (f" (backbone={' | '.join(names)})" if names else ""),
            )
        if self.data.kind == "folder" and self.task.name != "t2i" and not self.task.grid_shards:
            raise ConfigError("task.grid_shards", [], f"task={self.task.name} on data=folder needs the held-out "
                              "conditions of its sample grids as shards (python -m flash_exp.data.make_shards)")
        refuse_command_urls("task.grid_shards", self.task.grid_shards, self.data.allow_command_urls)
        if self.method.name != "flash" and self.backbone.family not in DIFFUSION_FAMILIES:
            raise ConfigError("method", self.method.name, f"runs on the diffusion families "
                              f"{', '.join(DIFFUSION_FAMILIES)}, not {self.backbone.family!r}; use method=flash")
        if self.task.name == "adapter_canny" and not self.task.adapter.pretrained:
            raise ConfigError("task.adapter.pretrained", self.task.adapter.pretrained,
                              "adapter_canny needs a T2IAdapter (hub id or local directory)")


def backbones_of_families(families: list[str]) -> list[str]:
    """Names of the ``conf/backbone`` configs whose family is one of ``families`` (for messages)."""
    directory = CONF_DIR / "backbone"
    names = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            family = OmegaConf.select(OmegaConf.load(path), "backbone.family")
        except Exception:  # noqa: BLE001 (a message helper: an unreadable file is left out)
            continue
        if family in families:
            names.append(path.stem)
    return names


def refuse_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for a key that no schema declares (``+trainer.foo=1`` adds one that would
    otherwise be ignored in silence); free-form dict fields (scheduler kwargs, eval options) are open."""
    kind = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(kind):
        return
    names = [f.name for f in dataclasses.fields(kind)]
    for key in node.keys():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(path, node._get_node(key)._value(), f"unknown key; {prefix.rstrip('.') or 'the root'} "
                                                                  f"has {', '.join(names)}")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            refuse_unknown_keys(child, f"{path}.")


def validate(cfg: DictConfig) -> TrainConfig:
    """Check every value of a composed config; return it as typed dataclasses.

    ``OmegaConf.to_object`` builds each dataclass, which runs its ``__post_init__`` checks.
    Raises :class:`ConfigError` naming the first offending key.
    """
    from omegaconf.errors import (
        ConfigKeyError,
        InterpolationResolutionError,
        InterpolationToMissingValueError,
        MissingMandatoryValue,
    )

    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, {k: v for k, v in cfg.items() if k != "hydra"})
    except ConfigKeyError as err:
        raise ConfigError(str(err.full_key or err.key), "?", f"unknown key ({err.msg.splitlines()[0]})") from None
    refuse_unknown_keys(merged)
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except InterpolationResolutionError as err:  # ${required:...} and other resolvers raising ConfigError
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        if not isinstance(err, InterpolationToMissingValueError):
            raise
        key = "backbone.pretrained" if "backbone.pretrained" in str(err) else str(err.full_key or "a key")
        raise ConfigError(key, "???", "a value is required") from None
    except MissingMandatoryValue as err:
        key = str(getattr(err, "full_key", "") or "a key")
        hint = (" (a hub id or a local diffusers pipeline directory; this task has no public teacher for "
                "this backbone, see README 'Tasks')" if key == "backbone.pretrained" else "")
        raise ConfigError(key, "???", "a value is required" + hint) from None


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str], config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` composed in-process with ``overrides``, as the command line would compose
    it (unvalidated; :func:`validate` types and checks it). Other schemas or resolvers a config names
    (``evaluate_schema``, the launcher's resolvers) must be registered by the caller first."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)


def compose_train_config(overrides: list[str]) -> TrainConfig:
    """The training config that ``python -m flash_exp.train <overrides>`` would validate (for the
    tools that take the same overrides: cache_latents, prefetch, plan, bench)."""
    return validate(compose(overrides))


def register_configs() -> None:
    """Register the root schema so ``conf/train.yaml`` can name it first in its defaults list."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def _toyworld_asset(name: str) -> Any:
    from flash_exp.toyworld import assets

    return {"teacher": lambda: str(assets.teacher_dir()), "train_shards": assets.train_shards,
            "heldout_shards": assets.heldout_shards, "clip": lambda: str(assets.clip_weights())}[name]()


def register_resolvers() -> None:
    """``${toyworld:teacher}``, ``${toyworld:train_shards}``...: paths of the shipped toy-world assets."""
    if not OmegaConf.has_resolver("toyworld"):
        OmegaConf.register_new_resolver("toyworld", _toyworld_asset)
    if not OmegaConf.has_resolver("required"):  # ${required:key,why}: a value the user must give
        OmegaConf.register_new_resolver("required", _required)
    if not OmegaConf.has_resolver("toytask"):  # ${toytask:inpainting}, ${toytask:faces_train_shards}, ...
        OmegaConf.register_new_resolver("toytask", _toytask_asset)


def _required(key: str, why: str = "") -> Any:
    raise ConfigError(key, "<unset>", "a value is required" + (f": {why}" if why else ""))


def _toytask_asset(name: str) -> Any:
    from flash_exp.toyworld import task_assets

    return task_assets.resolve(name)
