"""The evaluation's settings: the schema of ``conf/evaluate.yaml``, the device, the sampler settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from hydra.core.config_store import ConfigStore

from flash_exp.config import BackboneConfig, ConfigError, EvalConfig
from flash_exp.metrics.spec import SamplerSetting


@dataclass
class EvaluateConfig:
    """Schema of ``conf/evaluate.yaml`` (the YAML repeats these defaults with comments)."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    run_dir: str | None = None  # evaluate this run ...
    runs_dir: str | None = None  # ... or every run under this directory
    student_nfe: list[int] = field(default_factory=lambda: [1, 2, 4])
    teacher_nfe: list[int] = field(default_factory=lambda: [1, 2, 4])
    teacher_full: bool = True  # also the teacher at teacher_sampling.steps
    batch_size: int = 16
    num_workers: int = 0  # clean-fid DataLoader workers (decode + resize)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    keep_images: bool = True  # False: delete a setting's PNGs once its result is written
    cache_dir: str = "${oc.env:FLASH_EXP_EVAL_CACHE,${oc.env:FLASH_EXP_RUNS,runs}/.eval_cache}"
    benchmarks_dir: str | None = None  # default: <repo>/eval/benchmarks
    coco_root: str = "${oc.env:COCO_ROOT,data/coco}"
    inception: str = "${oc.env:FLASH_EXP_INCEPTION,weights/inception-2015-12-05.pt}"
    clip_weights: dict[str, str] = field(default_factory=lambda: {
        "ViT-g-14": "${oc.env:FLASH_EXP_CLIP_WEIGHTS,weights/CLIP-ViT-g-14-laion2B-s12B-b42K/open_clip_pytorch_model.bin}",
    })
    toy_clip_dir: str | None = None  # default: the shipped toy-world assets
    # local weights of the optional metrics (metrics.registry: Metric.weights -> a path)
    metric_weights: dict[str, str] = field(default_factory=lambda: {
        "cmmd": "${oc.env:FLASH_EXP_CMMD_WEIGHTS,weights/clip-vit-large-patch14-336}",
        "fd_dinov2": "${oc.env:FLASH_EXP_DINOV2_WEIGHTS,weights/dinov2-large}",
        "imagereward": "${oc.env:FLASH_EXP_IMAGEREWARD_WEIGHTS,weights/imagereward}",
        "pickscore": "${oc.env:FLASH_EXP_PICKSCORE_WEIGHTS,weights/pickscore}",
        "hpsv21": "${oc.env:FLASH_EXP_HPSV21_WEIGHTS,weights/hpsv21}",
        "aesthetic": "${oc.env:FLASH_EXP_AESTHETIC_WEIGHTS,weights/aesthetic}",
    })

    def __post_init__(self) -> None:
        if (self.run_dir is None) == (self.runs_dir is None):
            raise ConfigError("run_dir/runs_dir", [self.run_dir, self.runs_dir], "give exactly one of the two")
        if any(n <= 0 for n in [*self.student_nfe, *self.teacher_nfe]):
            raise ConfigError("student_nfe/teacher_nfe", [*self.student_nfe, *self.teacher_nfe], "positive step counts")
        if self.batch_size <= 0:
            raise ConfigError("batch_size", self.batch_size, "must be a positive integer")


def register_configs() -> None:
    """Register the schema so ``conf/evaluate.yaml`` can name it first in its defaults list."""
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sampler_settings(backbone: BackboneConfig, student_nfe: list[int], teacher_nfe: list[int],
                     teacher_full: bool) -> list[SamplerSetting]:
    """Student at each NFE without CFG (a guidance-distilled teacher's student: at its guidance input,
    ``backbone.student_guidance``); teacher at each NFE (and its full budget) with its guidance."""
    settings = [SamplerSetting("student", n, backbone.student_guidance) for n in dict.fromkeys(student_nfe)]
    steps = list(teacher_nfe) + ([backbone.teacher_sampling.steps] if teacher_full else [])
    guidance = float(backbone.teacher_sampling.guidance)
    return settings + [SamplerSetting("teacher", n, guidance) for n in dict.fromkeys(steps)]
