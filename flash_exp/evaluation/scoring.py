"""The scoring models of an evaluation, loaded once: prompt sets, FID extractors, CLIP models, LPIPS.

A :class:`Scorer` prepares each benchmark of ``eval.benchmarks`` (its prompt set and draws, feature
extractor, CLIP model, optional metrics and protocol spec), keeps the reference features, and scores a
list of PNG files: FID, KID, precision/recall/density/coverage on the benchmark's features, the CLIP
score, and the benchmark's optional ``metrics`` (:mod:`flash_exp.metrics.registry`), whose packages
and weights are checked when the benchmark is prepared, before any image is generated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flash_exp.config import ConfigError
from flash_exp.evaluation.settings import EvaluateConfig, resolve_device
from flash_exp.metrics.benchmarks import BENCHMARKS_DIR, BenchmarkConfig, build_prompt_set, load_benchmark
from flash_exp.metrics.clip_score import TOY_CLIP, ClipModel, clip_scores, open_clip_model, toy_clip_model
from flash_exp.metrics.features import FeatureExtractor, clip_image_extractor, load_inception
from flash_exp.metrics.fid import (
    GaussianStats,
    ReferenceFeatures,
    frechet_distance,
    image_features,
    reference_features,
)
from flash_exp.metrics.hashing import prompt_set_hash
from flash_exp.metrics.kid import kernel_inception_distance
from flash_exp.metrics.noise import kid_subset_seed
from flash_exp.metrics.precision_recall import (
    PRDC_SCORES,
    nearest_neighbour_radii,
    precision_recall_density_coverage,
)
from flash_exp.metrics.prompts import PromptSet
from flash_exp.metrics.registry import METRICS, MetricContext, MetricScorer, ScoreInput
from flash_exp.metrics.restoration import optional_lpips
from flash_exp.metrics.spec import ScoreSettings, protocol_spec


@dataclass
class PreparedBenchmark:
    """A benchmark with its prompt set, each draw's ``(prompt offset, prompts)``, scoring models and
    protocol spec, ready to score images."""

    config: BenchmarkConfig
    prompt_set: PromptSet
    extractor: FeatureExtractor
    clip: ClipModel
    protocol: dict[str, Any]
    scores: ScoreSettings
    draws: list[tuple[int, list[str]]]  # each prompt repeated images_per_prompt times in a row
    metrics: dict[str, MetricScorer]
    reference: ReferenceFeatures | None = None
    reference_radii: np.ndarray | None = None


class Scorer:
    """Scores images for every run; scoring models, prompt sets and reference statistics are loaded once."""

    def __init__(self, settings: EvaluateConfig) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self._benchmarks: dict[str, PreparedBenchmark] = {}
        self._clips: dict[tuple[str, str], ClipModel] = {}
        self._inception: FeatureExtractor | None = None
        self._lpips_net: torch.nn.Module | None = None
        self.lpips_note: str | None = None  # None until LPIPS was tried; "" when it loaded

    def _clip(self, model: str, tag: str) -> ClipModel:
        if (model, tag) not in self._clips:
            if model == TOY_CLIP:
                clip = toy_clip_model(self.settings.toy_clip_dir, self.device, self.cache_dir)
            else:
                weights = self.settings.clip_weights.get(model)
                if weights is None:
                    raise ConfigError(f"clip_weights.{model}", None, "name the local open_clip weights file")
                clip = open_clip_model(model, tag, weights, self.device, self.cache_dir)
            self._clips[(model, tag)] = clip
        return self._clips[(model, tag)]

    def _extractor(self, cfg: BenchmarkConfig) -> FeatureExtractor:
        if cfg.features == "toy_clip":
            return clip_image_extractor(self._clip(TOY_CLIP, "toyworld"))
        if self._inception is None:
            self._inception = load_inception(self.settings.inception, self.device, self.cache_dir)
        return self._inception

    def benchmark_config(self, name: str) -> BenchmarkConfig:
        """The typed benchmark ``name`` with its ``eval.options`` (nothing loaded)."""
        directory = Path(self.settings.benchmarks_dir) if self.settings.benchmarks_dir else BENCHMARKS_DIR
        overrides = self.settings.eval.options.get(name)
        return load_benchmark(name, directory, dict(overrides) if overrides else None)

    def prepare(self, name: str) -> PreparedBenchmark:
        """Load benchmark ``name``: prompt set, FID extractor, CLIP model (weights checked, not loaded)."""
        if name not in self._benchmarks:
            cfg = self.benchmark_config(name)
            self.check_metrics(cfg)
            prompt_set = build_prompt_set(cfg, Path(self.settings.coco_root).expanduser(), self.cache_dir)
            extractor = self._extractor(cfg)
            clip = self._clip(cfg.clip.model, cfg.clip.pretrained)
            reference = {"count": len(prompt_set.reference_files), "sha256": prompt_set.reference_hash(),
                         "source": prompt_set.provenance.get("reference", "all")}
            scores = self.score_settings(cfg)
            n = cfg.images_per_prompt
            draws = [(offset, [p for p in prompts for _ in range(n)])
                     for offset, prompts in prompt_set.draw_prompts(scores.draws)]
            metrics = self._metrics(cfg, prompt_set, reference)
            protocol = protocol_spec(cfg.name, prompt_set.prompt_hash, len(prompt_set.prompts), cfg.eval_res,
                                     cfg.seed, extractor.describe(), reference, clip.describe(),
                                     cfg.clip.photo_prefix, scores, [prompt_set_hash(p) for _, p in draws], n,
                                     {m: scorer.describe() for m, scorer in metrics.items()})
            self._benchmarks[name] = PreparedBenchmark(cfg, prompt_set, extractor, clip, protocol, scores, draws,
                                                       metrics)
        return self._benchmarks[name]

    def check_metrics(self, cfg: BenchmarkConfig) -> None:
        """Raise :class:`~flash_exp.metrics.registry.MetricUnavailable` when a package or the weights of one
        of the benchmark's optional metrics are missing (nothing is loaded)."""
        for name in cfg.metrics:
            metric = METRICS[name]
            weights = self.settings.metric_weights.get(metric.weights) if metric.weights else None
            metric.check_available(weights, dict(cfg.metric_options.get(name) or {}))

    def _metrics(self, cfg: BenchmarkConfig, prompt_set: PromptSet,
                 reference: dict[str, Any]) -> dict[str, MetricScorer]:
        """The benchmark's optional metrics, built (their models load on first use)."""
        out = {}
        for name in cfg.metrics:
            metric = METRICS[name]
            weights = self.settings.metric_weights.get(metric.weights) if metric.weights else None
            options = dict(cfg.metric_options.get(name) or {})
            out[name] = metric.load(MetricContext(weights, self.device, self.cache_dir, options,
                                                  list(prompt_set.reference_files),
                                                  {"benchmark": cfg.name, "reference": reference}))
        return out

    def score_settings(self, cfg: BenchmarkConfig) -> ScoreSettings:
        """``eval.draws`` and the benchmark's KID and precision/recall settings."""
        return ScoreSettings(self.settings.eval.draws, cfg.kid.num_subsets, cfg.kid.max_subset_size,
                             cfg.kid.degree, cfg.nearest_k)

    def _reference(self, bench: PreparedBenchmark) -> tuple[ReferenceFeatures, np.ndarray | None]:
        if bench.reference is None:
            key = {"benchmark": bench.config.name, "reference": bench.protocol["fid"]["reference"]}
            bench.reference = reference_features(bench.prompt_set.reference_files, bench.extractor,
                                                 bench.config.eval_res, self.cache_dir, key,
                                                 self.settings.batch_size, self.settings.num_workers)
        k = bench.scores.nearest_k
        if bench.reference_radii is None and bench.reference.features.shape[0] > k:
            bench.reference_radii = nearest_neighbour_radii(bench.reference.features, k, self.device)
        return bench.reference, bench.reference_radii

    def score(self, bench: PreparedBenchmark, files: list[Path], prompts: list[str],
              reference: ReferenceFeatures | None = None, draw: int = 0) -> dict[str, float]:
        """Scores of ``files`` (generated from ``prompts``, in order) as draw ``draw``: FID, KID and its
        standard deviation over subsets, precision/recall/density/coverage against the reference
        features (None when either set has at most ``nearest_k`` images), the mean CLIP score, the
        benchmark's optional metrics, and the wall time of the feature scores, of CLIP and of the
        optional metrics in seconds. ``reference`` defaults to the
        benchmark's (a conditional task brings its ground truth)."""
        cfg, s, k = bench.config, self.settings, bench.scores
        if reference is None:
            reference, radii = self._reference(bench)
        else:
            radii = None
        start = time.perf_counter()
        feats = image_features(files, bench.extractor, cfg.eval_res, s.batch_size, s.num_workers, "FID features")
        fid = frechet_distance(GaussianStats.from_features(feats), reference.stats)
        kid = kernel_inception_distance(feats, reference.features, k.kid_subsets, k.kid_subset_size, k.kid_degree,
                                        kid_subset_seed(cfg.seed, draw))
        if min(feats.shape[0], reference.features.shape[0]) > k.nearest_k:
            prdc = precision_recall_density_coverage(feats, reference.features, k.nearest_k, radii, self.device)
        else:  # undefined: a set needs more than nearest_k features
            prdc = dict.fromkeys(PRDC_SCORES)
        mid = time.perf_counter()
        clip = clip_scores(files, prompts, bench.clip, cfg.eval_res, cfg.clip.photo_prefix, s.batch_size)
        clip_end = time.perf_counter()
        batch = ScoreInput(list(files), list(prompts), cfg.images_per_prompt, cfg.eval_res, s.batch_size,
                           s.num_workers, feats)
        optional: dict[str, float | None] = {}
        for metric in bench.metrics.values():
            optional.update(metric.score(batch))
        return {"fid": fid, "kid": kid.mean, "kid_std": kid.std, **prdc, "clip_score": float(np.mean(clip)),
                **optional, "fid_s": mid - start, "clip_s": clip_end - mid,
                "metrics_s": time.perf_counter() - clip_end}

    def lpips(self) -> torch.nn.Module | None:
        """torchmetrics' LPIPS when the VGG16 weights are on this machine (built once), else None
        (:attr:`lpips_note` then says why)."""
        if self.lpips_note is None:
            net, self.lpips_note = optional_lpips()
            self._lpips_net = net.to(self.device) if net is not None else None
        return self._lpips_net
