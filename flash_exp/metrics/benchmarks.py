"""Benchmark definitions: ``eval/benchmarks/<name>.yaml`` merged onto :class:`BenchmarkConfig`.

A benchmark fixes the prompt set and the reference images (COCO annotations or the toy world), the
number of images, the evaluation resolution of the crop-and-resize policy, the base seed, the FID
feature extractor and the CLIP model. Per-run overrides come from ``eval.options.<name>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from flash_exp.config import ConfigError
from flash_exp.metrics.coco import REFERENCE_MODES, coco_prompt_set
from flash_exp.metrics.prompts import PromptSet
from flash_exp.metrics.registry import METRICS
from flash_exp.metrics.toy import toy_prompt_set

BENCHMARKS_DIR = Path(__file__).resolve().parents[2] / "eval" / "benchmarks"
SOURCES = ("coco", "toy")
FEATURES = ("inception", "toy_clip")


@dataclass
class CocoConfig:
    """COCO files, relative to ``coco_root`` (env ``COCO_ROOT``) unless absolute; see :mod:`.coco`."""

    annotations: str = "annotations/captions_val2017.json"
    images: str = "val2017"
    captions_file: str | None = None  # one caption per line; replaces the seeded caption choice
    caption_seed: int = 0
    reference: str = "all"  # "all": every annotated image; "selected": the images of the chosen captions


@dataclass
class ToyConfig:
    shards: list[str] | None = None  # held-out webdataset shards; default: the shipped toy world's


@dataclass
class ClipConfig:
    """open_clip model name and pretrained tag (weights from ``clip_weights.<model>``), or ``toy``."""

    model: str = "ViT-g-14"
    pretrained: str = "laion2b_s12b_b42k"
    photo_prefix: bool = False  # prepend "A photo depicts " to every caption


@dataclass
class KidConfig:
    """KID over ``num_subsets`` random subsets of ``min(n, M, max_subset_size)`` features (clean-fid's defaults)."""

    num_subsets: int = 100
    max_subset_size: int = 1000
    degree: int = 3


@dataclass
class BenchmarkConfig:
    name: str = MISSING
    source: str = "coco"
    description: str = ""
    num_images: int = 5000
    eval_res: int = 256  # side of the centre-crop + LANCZOS resize, real and generated images
    seed: int = 0  # image i of draw d starts from the noise of flash_exp.metrics.noise.image_noise_seed(seed, d, i)
    features: str = "inception"  # FID feature extractor (also of KID and precision/recall): inception | toy_clip
    images_per_prompt: int = 1  # images generated per prompt (each from its own noise); >= 2 for diversity
    metrics: list[str] = field(default_factory=list)  # optional scores beside FID/KID/PRDC/CLIP (metrics.registry)
    metric_options: dict[str, Any] = field(default_factory=dict)  # per metric, e.g. {diversity: {lpips_net: null}}
    kid: KidConfig = field(default_factory=KidConfig)
    nearest_k: int = 5  # neighbours of precision/recall/density/coverage (the prdc package's usual k)
    clip: ClipConfig = field(default_factory=ClipConfig)
    coco: CocoConfig = field(default_factory=CocoConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"{self.name}.source", self.source, f"allowed values are {', '.join(SOURCES)}")
        if self.features not in FEATURES:
            raise ConfigError(f"{self.name}.features", self.features, f"allowed values are {', '.join(FEATURES)}")
        if self.coco.reference not in REFERENCE_MODES:
            raise ConfigError(f"{self.name}.coco.reference", self.coco.reference,
                              f"allowed values are {', '.join(REFERENCE_MODES)}")
        for key, value in (("num_images", self.num_images), ("eval_res", self.eval_res),
                           ("kid.max_subset_size", self.kid.max_subset_size)):
            if value < 2:
                raise ConfigError(f"{self.name}.{key}", value, "must be an integer >= 2")
        if self.images_per_prompt < 1:
            raise ConfigError(f"{self.name}.images_per_prompt", self.images_per_prompt, "must be an integer >= 1")
        for metric in self.metrics:
            if metric not in METRICS:
                raise ConfigError(f"{self.name}.metrics", metric, f"allowed values are {', '.join(METRICS)}")
            if METRICS[metric].needs_groups and self.images_per_prompt < 2:
                raise ConfigError(f"{self.name}.images_per_prompt", self.images_per_prompt,
                                  f"{metric} compares the images of one prompt: set images_per_prompt >= 2")
        for key, value in (("kid.num_subsets", self.kid.num_subsets), ("kid.degree", self.kid.degree),
                           ("nearest_k", self.nearest_k)):
            if value < 1:
                raise ConfigError(f"{self.name}.{key}", value, "must be an integer >= 1")


def available_benchmarks(directory: Path = BENCHMARKS_DIR) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def load_benchmark(name: str, directory: Path = BENCHMARKS_DIR,
                   overrides: dict[str, Any] | None = None) -> BenchmarkConfig:
    """The typed benchmark ``name`` from ``directory/<name>.yaml``, with ``overrides`` merged on top."""
    path = Path(directory) / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError("eval.benchmarks", name,
                          f"no {path}; defined benchmarks: {', '.join(available_benchmarks(directory)) or 'none'}")
    merged = OmegaConf.merge(OmegaConf.structured(BenchmarkConfig), OmegaConf.load(path), overrides or {})
    if merged.name != name:
        raise ConfigError(f"{path}: name", merged.name, f"must equal the file name {name!r}")
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def build_prompt_set(cfg: BenchmarkConfig, coco_root: Path, cache_dir: Path) -> PromptSet:
    """Prompts and reference images of ``cfg`` (COCO files under ``coco_root``; toy shards)."""
    if cfg.source == "coco":
        c = cfg.coco
        return coco_prompt_set(cfg.name, coco_root, c.annotations, c.images, cfg.num_images, c.caption_seed,
                               c.captions_file, c.reference)
    return toy_prompt_set(cfg.num_images, cache_dir, cfg.toy.shards)
