"""``python -m flash_exp.evaluate``: sample a run's student (and teacher baselines), score, write JSON.

    python -m flash_exp.evaluate run_dir=runs/toy-t2i/<timestamp>                 # the toy benchmark
    python -m flash_exp.evaluate run_dir=<run> eval=coco2017_5k coco_root=/data/coco
    python -m flash_exp.evaluate runs_dir=runs eval=paper                         # every run under runs/
    python -m flash_exp.evaluate run_dir=<run> eval=coco2017_5k +eval.options.coco2017_5k.num_images=500

For each benchmark of ``eval.benchmarks`` and each sampler setting (the student at ``student_nfe``
without CFG; the teacher at ``teacher_nfe`` and at its full budget ``teacher_sampling.steps``, both
with ``teacher_sampling.guidance``) it writes ``<run>/eval/<benchmark>/<sampler>_nfe<N>.json``.
A result whose spec hash and model are unchanged is kept; generation resumes where it stopped.
Teacher baselines do not depend on the run: they are computed once per teacher under ``cache_dir``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from flash_exp.backbones.lora_files import LoraLoadError
from flash_exp.config import BackboneConfig, ConfigError, EvalConfig
from flash_exp.files import write_json_atomic
from flash_exp.metrics.benchmarks import BENCHMARKS_DIR, BenchmarkConfig, build_prompt_set, load_benchmark
from flash_exp.metrics.clip_score import TOY_CLIP, ClipModel, clip_scores, open_clip_model, toy_clip_model
from flash_exp.metrics.features import FeatureExtractor, clip_image_extractor, load_inception
from flash_exp.metrics.fid import GaussianStats, frechet_distance, image_features, reference_statistics
from flash_exp.metrics.generate import SamplerSetting, generate_images, image_path
from flash_exp.metrics.hashing import directory_sha256, file_sha256, sha256_json
from flash_exp.metrics.images import write_png_atomic
from flash_exp.metrics.prompts import PromptSet
from flash_exp.metrics.results import (
    EVAL_DIR,
    RESULT_KIND,
    images_dir,
    read_json,
    result_path,
)
from flash_exp.metrics.runs import (
    CONFIG_FILE,
    EXPORT_DIR,
    READY,
    find_runs,
    load_backbone,
    run_state,
    run_task,
    student_file,
    write_status,
)
from flash_exp.metrics.runs import run_fields as _run_fields
from flash_exp.metrics.spec import eval_spec, protocol_hash, protocol_spec, sampler_spec, spec_hash

log = logging.getLogger("flash_exp.evaluate")

MANIFEST_FILE = "spec.json"
TEACHER_RESULT_FILE = "result.json"


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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def sampler_settings(backbone: BackboneConfig, student_nfe: list[int], teacher_nfe: list[int],
                     teacher_full: bool) -> list[SamplerSetting]:
    """Student at each NFE without CFG; teacher at each NFE (and its full budget) with its guidance."""
    settings = [SamplerSetting("student", n, 0.0) for n in dict.fromkeys(student_nfe)]
    steps = list(teacher_nfe) + ([backbone.teacher_sampling.steps] if teacher_full else [])
    guidance = float(backbone.teacher_sampling.guidance)
    return settings + [SamplerSetting("teacher", n, guidance) for n in dict.fromkeys(steps)]


def teacher_identity(backbone: BackboneConfig, memo_dir: Path | None = None) -> dict[str, Any]:
    """What identifies the teacher weights (the student adds its LoRA digest): its name and settings and
    a digest of its files, so a teacher rebuilt in place is a new teacher (``memo_dir`` keeps the file
    digests: an unchanged file is not read again)."""
    from flash_exp.backbones.hub import resolve_pretrained

    local = resolve_pretrained(backbone.pretrained, backbone.revision, backbone.variant)
    return {"family": backbone.family, "pretrained": backbone.pretrained, "revision": backbone.revision,
            "variant": backbone.variant, "dtype": backbone.dtype,
            "weights_sha256": directory_sha256(Path(local), memo_dir)}


class RunPipelines:
    """A run's diffusers pipeline for one sampler at a time, loaded on first use: the student (the
    exported LoRA, the student scheduler) or the teacher (no LoRA, the teacher_sampling scheduler)."""

    def __init__(self, backbone: BackboneConfig, lora_dir: Path, device: torch.device) -> None:
        self.backbone, self.lora_dir, self.device = backbone, lora_dir, device
        self._sampler: str | None = None
        self._pipe: Any = None

    def get(self, sampler: str) -> Any:
        if sampler != self._sampler:
            from flash_exp.backbones import load_pipeline

            self._pipe = None  # release the other sampler's weights before loading
            student = sampler == "student"
            self._pipe = load_pipeline(self.backbone, self.lora_dir if student else None,
                                       sampler="student" if student else "teacher_sampling").to(self.device)
            self._sampler = sampler
        return self._pipe


@dataclass
class PreparedBenchmark:
    """A benchmark with its prompt set, scoring models and protocol spec, ready to score images."""

    config: BenchmarkConfig
    prompt_set: PromptSet
    extractor: FeatureExtractor
    clip: ClipModel
    protocol: dict[str, Any]
    reference: GaussianStats | None = None


class Evaluator:
    """Evaluates runs; scoring models, prompt sets and reference statistics are loaded once."""

    def __init__(self, settings: EvaluateConfig) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.cache_dir = Path(settings.cache_dir).expanduser()
        self._benchmarks: dict[str, PreparedBenchmark] = {}
        self._clips: dict[tuple[str, str], ClipModel] = {}
        self._inception: FeatureExtractor | None = None
        self._lpips_net: torch.nn.Module | None = None
        self._lpips_note: str | None = None  # None until LPIPS was tried; "" when it loaded

    # ------------------------------------------------------------------ scoring models
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

    def prepare(self, name: str) -> PreparedBenchmark:
        """Load benchmark ``name``: prompt set, FID extractor, CLIP model (weights checked, not loaded)."""
        if name not in self._benchmarks:
            directory = Path(self.settings.benchmarks_dir) if self.settings.benchmarks_dir else BENCHMARKS_DIR
            overrides = self.settings.eval.options.get(name)
            cfg = load_benchmark(name, directory, dict(overrides) if overrides else None)
            prompt_set = build_prompt_set(cfg, Path(self.settings.coco_root).expanduser(), self.cache_dir)
            extractor = self._extractor(cfg)
            clip = self._clip(cfg.clip.model, cfg.clip.pretrained)
            reference = {"count": len(prompt_set.reference_files), "sha256": prompt_set.reference_hash(),
                         "source": prompt_set.provenance.get("reference", "all")}
            protocol = protocol_spec(cfg.name, prompt_set.prompt_hash, len(prompt_set.prompts), cfg.eval_res,
                                     cfg.seed, extractor.describe(), reference, clip.describe(),
                                     cfg.clip.photo_prefix)
            self._benchmarks[name] = PreparedBenchmark(cfg, prompt_set, extractor, clip, protocol)
        return self._benchmarks[name]

    def _reference(self, bench: PreparedBenchmark) -> GaussianStats:
        if bench.reference is None:
            key = {"benchmark": bench.config.name, "reference": bench.protocol["fid"]["reference"]}
            bench.reference = reference_statistics(bench.prompt_set.reference_files, bench.extractor,
                                                   bench.config.eval_res, self.cache_dir, key,
                                                   self.settings.batch_size, self.settings.num_workers)
        return bench.reference

    def score(self, bench: PreparedBenchmark, files: list[Path], prompts: list[str] | None = None,
              reference: GaussianStats | None = None) -> dict[str, float]:
        """FID against the reference statistics and mean CLIP score of ``files`` (in prompt order),
        with the wall time of each in seconds. ``prompts`` and ``reference`` default to the
        benchmark's (a conditional task brings its captions and ground truth)."""
        cfg, s = bench.config, self.settings
        reference = reference if reference is not None else self._reference(bench)
        start = time.perf_counter()
        feats = image_features(files, bench.extractor, cfg.eval_res, s.batch_size, s.num_workers, "FID features")
        fid = frechet_distance(GaussianStats.from_features(feats), reference)
        mid = time.perf_counter()
        clip = clip_scores(files, prompts if prompts is not None else bench.prompt_set.prompts, bench.clip,
                           cfg.eval_res, cfg.clip.photo_prefix, s.batch_size)
        return {"fid": fid, "clip_score": float(np.mean(clip)), "fid_s": mid - start,
                "clip_s": time.perf_counter() - mid}

    # ------------------------------------------------------------------ runs
    def run_models(self, run_dir: Path) -> tuple[BackboneConfig, dict[str, Any], dict[str, Any]]:
        """The run's backbone config and what identifies its teacher and its student (the teacher
        plus the exported LoRA's digest); raises when the run has no export."""
        backbone = load_backbone(run_dir)
        weights = student_file(run_dir)
        if weights is None:
            raise FileNotFoundError(f"{run_dir} has no exported student in {EXPORT_DIR}/")
        teacher = teacher_identity(backbone, self.cache_dir)
        return backbone, teacher, {**teacher, "lora_sha256": file_sha256(weights, self.cache_dir)}

    def evaluate_run(self, run_dir: Path) -> list[dict[str, Any]]:
        """Every configured benchmark x sampler setting of ``run_dir``; returns the results."""
        if run_task(run_dir) != "t2i":
            return self.evaluate_task_run(Path(run_dir))
        backbone, teacher, student = self.run_models(run_dir)
        pipelines = RunPipelines(backbone, student_file(run_dir).parent, self.device)
        s = self.settings
        results = []
        for name in s.eval.benchmarks:
            bench = self.prepare(name)
            for setting in sampler_settings(backbone, s.student_nfe, s.teacher_nfe, s.teacher_full):
                is_student = setting.sampler == "student"
                scheduler = backbone.student_scheduler if is_student else backbone.teacher_sampling.scheduler
                spec = eval_spec(bench.protocol, sampler_spec(setting, asdict(scheduler), backbone.resolution))
                model = {"kind": setting.sampler, **(student if is_student else teacher)}
                results.append(self._evaluate_setting(Path(run_dir), bench, setting, spec, model,
                                                      partial(pipelines.get, setting.sampler), backbone.resolution))
        return results

    def _evaluate_setting(self, run_dir: Path, bench: PreparedBenchmark, setting: SamplerSetting,
                          spec: dict[str, Any], model: dict[str, Any], pipeline: Callable[[], Any],
                          resolution: int) -> dict[str, Any]:
        name, digest = bench.config.name, spec_hash(spec)
        out = result_path(run_dir, name, setting.name)
        existing = read_json(out)
        if existing is not None and existing.get("spec_hash") == digest and existing.get("model") == model:
            log.info("%s: %s %s is up to date", run_dir, name, setting.name)
            return existing
        shared = None
        if setting.sampler == "teacher":
            shared = self.cache_dir / "teachers" / sha256_json(model)[:16] / name / digest[:16]
            cached = read_json(shared / TEACHER_RESULT_FILE)
            if cached is not None and cached.get("spec_hash") == digest and cached.get("model") == model:
                result = {**cached, **_run_fields(run_dir), "reused_from": str(shared)}
                write_json_atomic(out, result)
                return result
        directory = shared if shared is not None else images_dir(run_dir, name, setting.name)
        _claim(directory, {"spec_hash": digest, "model": model})
        start = time.perf_counter()
        report = generate_images(pipeline, bench.prompt_set.prompts, directory, setting, bench.config.seed,
                                 resolution, self.settings.batch_size,
                                 description=f"{run_dir.name} {name} {setting.name}")
        scores = self.score(bench, report.files)
        result = {
            "kind": RESULT_KIND, **_run_fields(run_dir),
            "benchmark": name, "setting": setting.name, "sampler": setting.sampler, "nfe": setting.nfe,
            "guidance": setting.guidance, "fid": scores["fid"], "clip_score": scores["clip_score"],
            "num_images": len(report.files), "images_generated": report.generated,
            "wall_time_s": {"generation": report.seconds, "fid": scores["fid_s"], "clip": scores["clip_s"],
                            "total": time.perf_counter() - start},
            "spec_hash": digest, "protocol_hash": protocol_hash(spec), "spec": spec, "model": model,
            "prompts": bench.prompt_set.provenance, "images": str(directory),
            "versions": {p: version(p) for p in ("torch", "diffusers", "clean-fid", "open_clip_torch")},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if shared is not None:
            write_json_atomic(shared / TEACHER_RESULT_FILE, result)
        write_json_atomic(out, result)
        if not self.settings.keep_images:
            for png in report.files:
                png.unlink(missing_ok=True)
        log.info("%s: %s %s FID %.4f CLIP %.4f", run_dir, name, setting.name, result["fid"], result["clip_score"])
        return result


    # ------------------------------------------------------------------ conditional tasks
    def evaluate_task_run(self, run_dir: Path) -> list[dict[str, Any]]:
        """A conditional task's run: the benchmark's first ``num_images`` held-out conditions of the
        task (``task.grid_shards``, with masks / degradations / edge maps seeded by the benchmark's
        seed) instead of its prompts. Per sampler setting: FID against the ground-truth images of
        those conditions (the benchmark's feature extractor), the CLIP score against their captions,
        and ``restoration``: PSNR, SSIM and LPIPS against the ground truth (tasks that have one) and
        the task's condition scores, each the mean over images. The student is the export, loaded by
        diffusers' LoRA loader into the task's module (:func:`~flash_exp.export.load_exported_run`)."""
        from flash_exp.export import load_exported_run
        from flash_exp.metrics.restoration import batch_digest, held_out_conditions

        backbone_cfg, teacher, student = self.run_models(run_dir)
        cfg, module = load_exported_run(run_dir)
        module = module.to(self.device).eval()
        s = self.settings
        results = []
        for name in s.eval.benchmarks:
            bench = self.prepare(name)
            batch = held_out_conditions(cfg, bench.config.num_images, seed=bench.config.seed)
            captions = list(batch["captions"])
            truth_dir = Path(run_dir) / EVAL_DIR / name / "ground_truth"
            truth_files = write_pngs(batch["pixels"], truth_dir)
            conditions = batch_digest({k: v for k, v in batch.items() if k != "key"})
            reference = {"count": len(truth_files), "sha256": conditions, "source": "ground truth of the conditions"}
            protocol = {**protocol_spec(name, conditions, len(captions), bench.config.eval_res, bench.config.seed,
                                        bench.extractor.describe(), reference, bench.clip.describe(),
                                        bench.config.clip.photo_prefix),
                        "task": module.task.name}
            stats = reference_statistics(truth_files, bench.extractor, bench.config.eval_res, self.cache_dir,
                                         {"benchmark": name, "task": module.task.name, "conditions": conditions},
                                         s.batch_size, s.num_workers)
            for setting in sampler_settings(backbone_cfg, s.student_nfe, s.teacher_nfe, s.teacher_full):
                is_student = setting.sampler == "student"
                scheduler = backbone_cfg.student_scheduler if is_student else backbone_cfg.teacher_sampling.scheduler
                spec = eval_spec(protocol, sampler_spec(setting, asdict(scheduler), backbone_cfg.resolution))
                model = {"kind": setting.sampler, **(student if is_student else teacher)}
                results.append(self._evaluate_task_setting(Path(run_dir), bench, module, batch, stats, setting,
                                                           spec, model))
        return results

    def _evaluate_task_setting(self, run_dir: Path, bench: PreparedBenchmark, module: Any, batch: dict[str, Any],
                               reference: GaussianStats, setting: SamplerSetting, spec: dict[str, Any],
                               model: dict[str, Any]) -> dict[str, Any]:
        from flash_exp.metrics.restoration import batch_slice, restoration_metrics, sample_task, to_device

        name, digest = bench.config.name, spec_hash(spec)
        out = result_path(run_dir, name, setting.name)
        existing = read_json(out)
        if existing is not None and existing.get("spec_hash") == digest and existing.get("model") == model:
            log.info("%s: %s %s is up to date", run_dir, name, setting.name)
            return existing
        task, backbone, s = module.task, module.backbone, self.settings
        directory = images_dir(run_dir, name, setting.name)
        _claim(directory, {"spec_hash": digest, "model": model})
        count = len(batch["captions"])
        start = time.perf_counter()
        totals: dict[str, float] = {}
        for first in tqdm(range(0, count, s.batch_size), desc=f"{run_dir.name} {name} {setting.name}", unit="batch"):
            chunk = to_device(batch_slice(batch, first, first + s.batch_size), self.device)
            images = sample_task(backbone, task, chunk, setting.sampler == "student", setting.nfe, setting.guidance,
                                 bench.config.seed + first)
            write_pngs(images * 2 - 1, directory, first)
            scores = task.condition_metrics(images, to_device(chunk, "cpu"))
            truth = task.ground_truth(chunk)
            if truth is not None:
                scores.update(restoration_metrics(images, (truth.float().cpu() + 1) / 2, lpips=self._lpips()))
            for key, value in scores.items():
                if isinstance(value, (int, float)):
                    totals[key] = totals.get(key, 0.0) + float(value) * images.shape[0]
        generation = time.perf_counter() - start
        files = [image_path(directory, i) for i in range(count)]
        scores = self.score(bench, files, list(batch["captions"]), reference)
        restoration = {k: v / count for k, v in totals.items()}
        if task.has_ground_truth and "lpips" not in restoration:
            restoration["lpips"] = None
        result = {
            "kind": RESULT_KIND, **_run_fields(run_dir), "task": task.name,
            "benchmark": name, "setting": setting.name, "sampler": setting.sampler, "nfe": setting.nfe,
            "guidance": setting.guidance, "fid": scores["fid"], "clip_score": scores["clip_score"],
            "restoration": restoration, "num_images": count, "images_generated": count,
            "wall_time_s": {"generation": generation, "fid": scores["fid_s"], "clip": scores["clip_s"],
                            "total": time.perf_counter() - start},
            "spec_hash": digest, "protocol_hash": protocol_hash(spec), "spec": spec, "model": model,
            "prompts": {"source": "held-out conditions", "keys_sha256": sha256_json(list(batch["key"]))},
            "images": str(directory),
            "versions": {p: version(p) for p in ("torch", "diffusers", "clean-fid", "open_clip_torch", "torchmetrics")},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if self._lpips() is None and task.has_ground_truth:
            result["lpips_note"] = self._lpips_note
        write_json_atomic(out, result)
        log.info("%s: %s %s FID %.4f CLIP %.4f %s", run_dir, name, setting.name, result["fid"],
                 result["clip_score"], restoration)
        return result

    def _lpips(self) -> torch.nn.Module | None:
        """torchmetrics' LPIPS when the VGG16 weights are on this machine (built once), else None."""
        if self._lpips_note is None:
            from flash_exp.metrics.restoration import LpipsUnavailable, build_lpips

            try:
                self._lpips_net, self._lpips_note = build_lpips().to(self.device), ""
            except LpipsUnavailable as err:
                self._lpips_net, self._lpips_note = None, f"LPIPS skipped: {err}"
        return self._lpips_net


def write_pngs(images: torch.Tensor, directory: Path, first: int = 0) -> list[Path]:
    """(B, 3, H, W) images in [-1, 1] as ``<directory>/<first + i>.png``; returns the paths."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    files = []
    for i, array in enumerate(pixels.permute(0, 2, 3, 1).numpy()):
        path = image_path(directory, first + i)
        write_png_atomic(Image.fromarray(array), path)
        files.append(path)
    return files


def _claim(directory: Path, manifest: dict[str, Any]) -> None:
    """Make ``directory`` hold images of ``manifest`` only: images of another spec or model are removed."""
    path = directory / MANIFEST_FILE
    previous = read_json(path)
    if previous is not None and previous != manifest:
        log.warning("%s holds images of another spec or model; regenerating them", directory)
        shutil.rmtree(directory)
    if previous != manifest:
        write_json_atomic(path, manifest)


def evaluate(settings: EvaluateConfig) -> int:
    """Evaluate ``run_dir`` or every run under ``runs_dir``; returns a process exit code.

    Failed and unfinished runs get an ``eval/status.json`` saying so. Exit code 1 when the given
    ``run_dir`` is not ready, or when evaluating some run under ``runs_dir`` raised; 0 otherwise.
    """
    evaluator = Evaluator(settings)
    benchmarks = list(settings.eval.benchmarks)
    for name in benchmarks:
        evaluator.prepare(name)
    if settings.run_dir is not None:
        runs = [Path(settings.run_dir)]
        if not (runs[0] / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"run_dir={runs[0]} is not a training run: no {CONFIG_FILE}")
    else:
        runs = find_runs(Path(settings.runs_dir))
        log.info("%d runs under %s", len(runs), settings.runs_dir)
    code = 0
    for run in runs:
        state = run_state(run)
        if state.status != READY:
            log.warning("%s: %s (%s), recorded and skipped", run, state.status, state.reason)
            write_status(run, state.status, state.reason, benchmarks)
            code = 1 if settings.run_dir is not None else code
            continue
        try:
            evaluator.evaluate_run(run)
        except Exception as err:
            write_status(run, "eval_error", f"{type(err).__name__}: {err}", benchmarks)
            if settings.run_dir is not None:
                raise
            log.exception("%s: evaluation failed", run)
            code = 1
            continue
        write_status(run, "evaluated", "", benchmarks)
    return code


register_configs()


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        settings: EvaluateConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        code = evaluate(settings)
    except (ConfigError, FileNotFoundError, LoraLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    main()
