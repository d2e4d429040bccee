"""The ``task`` group: what a task adds to the batch and the condition (masks, degradations, edges,
adapters, identities)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flash_exp.config.backbone import FAMILIES
from flash_exp.config.errors import ConfigError, one_of, positive

TASKS = ("t2i", "inpainting", "superres", "adapter_canny", "faceswap")
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
        one_of("task.mask.kind", self.kind, MASK_KINDS)
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
            positive("task.canny.detect_resolution", self.detect_resolution)


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
        positive("task.identity.reference_size", self.reference_size)
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
        one_of("task.name", self.name, TASKS)
        for family in self.supported_families:
            one_of("task.supported_families", family, FAMILIES)
        self.mask.check()
        self.degradation.check()
        self.canny.check()
        self.adapter.check()
        self.identity.check()
        positive("task.num_grid_samples", self.num_grid_samples)
