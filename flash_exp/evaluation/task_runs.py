"""A conditional task's run: held-out conditions sampled by the student and the teacher, then scored.

Instead of a benchmark's prompts, the benchmark's first ``num_images`` held-out conditions of the task
(``task.grid_shards``, with masks / degradations / edge maps seeded by the benchmark's seed). Per
sampler setting: FID against the ground-truth images of those conditions (the benchmark's feature
extractor), KID and precision/recall/density/coverage on the same features, the CLIP score against
their captions, and ``restoration``: PSNR, SSIM and LPIPS against the ground truth (tasks that have
one) and the task's condition scores, each the mean over images. With ``eval.draws`` > 1 every draw
samples the same conditions from other noise (:func:`~flash_exp.metrics.noise.image_noise_seed`);
scores are the mean over draws, as in text-to-image results, with a gallery of draw 0's first images.
The student is the export, loaded by diffusers' LoRA loader into the backbone
(:func:`~flash_exp.training.student.load_exported_run`); no training module is built.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from flash_exp.backbones.base import Backbone
from flash_exp.config import TrainConfig
from flash_exp.evaluation.gallery import copy_gallery, gallery_dir, relative_paths
from flash_exp.evaluation.image_files import claim, write_pngs
from flash_exp.evaluation.run_models import run_models
from flash_exp.evaluation.scoring import PreparedBenchmark, Scorer
from flash_exp.evaluation.settings import sampler_settings
from flash_exp.files import write_json_atomic
from flash_exp.metrics.draws import draw_record, summarise_draws
from flash_exp.metrics.fid import ReferenceFeatures, reference_features
from flash_exp.metrics.hashing import sha256_json
from flash_exp.metrics.images import image_path
from flash_exp.metrics.noise import image_noise_seeds
from flash_exp.metrics.restoration import optional_lpips
from flash_exp.metrics.results import (
    EVAL_DIR,
    RESULT_KIND,
    images_dir,
    result_in_place,
)
from flash_exp.metrics.spec import (
    SamplerSetting,
    eval_spec,
    protocol_hash,
    protocol_spec,
    sampler_spec,
    spec_hash,
)
from flash_exp.tasks.base import Task
from flash_exp.training.conditions import grid_conditions, held_out_conditions, to_device
from flash_exp.training.rundir import run_fields
from flash_exp.training.samples import sample_and_score
from flash_exp.training.student import Student, load_exported_run

log = logging.getLogger("flash_exp.evaluate")


def batch_digest(batch: dict) -> str:
    """sha256 of a batch's tensors (bytes, shape, dtype) and strings, in key order: which conditions."""
    digest = hashlib.sha256()
    for key in sorted(batch):
        value = batch[key]
        digest.update(key.encode())
        if torch.is_tensor(value):
            digest.update(f"{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def batch_slice(batch: dict, start: int, stop: int) -> dict:
    """Samples ``start:stop`` of a batch (tensors and lists alike)."""
    return {k: v[start:stop] for k, v in batch.items()}


def score_task_run(scorer: Scorer, run_dir: Path) -> list[dict[str, Any]]:
    """Every configured benchmark x sampler setting of the conditional task run ``run_dir``; returns the results."""
    backbone_cfg, teacher, student = run_models(run_dir, scorer.cache_dir)
    cfg, module = load_exported_run(run_dir)
    module = module.to(scorer.device).eval()
    s = scorer.settings
    results = []
    for name in s.eval.benchmarks:
        bench = scorer.prepare(name)
        if bench.config.images_per_prompt > 1 or bench.metrics:
            log.info("%s: %s skipped: a conditional task is scored on its conditions' ground truth, without "
                     "images_per_prompt or optional metrics", run_dir, name)
            continue
        batch = held_out_conditions(cfg, bench.config.num_images, seed=bench.config.seed)
        captions = list(batch["captions"])
        truth_dir = Path(run_dir) / EVAL_DIR / name / "ground_truth"
        truth_files = write_pngs(batch["pixels"], truth_dir)
        conditions = batch_digest({k: v for k, v in batch.items() if k != "key"})
        reference = {"count": len(truth_files), "sha256": conditions, "source": "ground truth of the conditions"}
        protocol = {**protocol_spec(name, conditions, len(captions), bench.config.eval_res, bench.config.seed,
                                    bench.extractor.describe(), reference, bench.clip.describe(),
                                    bench.config.clip.photo_prefix, bench.scores),
                    "task": module.task.name}
        stats = reference_features(truth_files, bench.extractor, bench.config.eval_res, scorer.cache_dir,
                                     {"benchmark": name, "task": module.task.name, "conditions": conditions},
                                     s.batch_size, s.num_workers)
        for setting in sampler_settings(backbone_cfg, s.student_nfe, s.teacher_nfe, s.teacher_full):
            is_student = setting.sampler == "student"
            scheduler = backbone_cfg.student_scheduler if is_student else backbone_cfg.teacher_sampling.scheduler
            spec = eval_spec(protocol, sampler_spec(setting, asdict(scheduler), backbone_cfg.resolution))
            model = {"kind": setting.sampler, **(student if is_student else teacher)}
            results.append(score_task_setting(scorer, Path(run_dir), bench, module, batch, stats, setting, spec,
                                              model))
    return results


def score_task_setting(scorer: Scorer, run_dir: Path, bench: PreparedBenchmark, module: Student,
                       batch: dict[str, Any], reference: ReferenceFeatures, setting: SamplerSetting,
                       spec: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """One benchmark x sampler setting of a task run: the result in place when its spec and model are
    unchanged, else sample the conditions of each draw in batches, score, write."""
    name, digest = bench.config.name, spec_hash(spec)
    out, existing = result_in_place(run_dir, name, setting.name, digest, model)
    if existing is not None:
        log.info("%s: %s %s is up to date", run_dir, name, setting.name)
        return existing
    task, backbone, s = module.task, module.backbone, scorer.settings
    directory = images_dir(run_dir, name, setting.name)
    claim(directory, {"spec_hash": digest, "model": model})
    count, captions = len(batch["captions"]), list(batch["captions"])
    start = time.perf_counter()
    draws, restorations, seconds = [], [], {"generation": 0.0, "fid": 0.0, "clip": 0.0}
    for d in range(bench.scores.draws):
        draw_start, totals = time.perf_counter(), {}
        draw_dir = directory / f"draw{d}"
        for first in tqdm(range(0, count, s.batch_size), desc=f"{run_dir.name} {name} {setting.name} draw {d}",
                          unit="batch"):
            chunk = to_device(batch_slice(batch, first, first + s.batch_size), scorer.device)
            seeds = image_noise_seeds(bench.config.seed, d, range(first, min(first + s.batch_size, count)))
            [(_, images, scores)] = sample_and_score(backbone, task, chunk, [setting], seeds[0],
                                                     lpips=scorer.lpips(), noise_seeds=seeds)
            write_pngs(images * 2 - 1, draw_dir, first)
            for key, value in scores.items():
                if isinstance(value, (int, float)):
                    totals[key] = totals.get(key, 0.0) + float(value) * images.shape[0]
        seconds["generation"] += time.perf_counter() - draw_start
        files = [image_path(draw_dir, i) for i in range(count)]
        scores = scorer.score(bench, files, captions, reference, draw=d)
        seconds["fid"] += scores["fid_s"]
        seconds["clip"] += scores["clip_s"]
        if d == 0:
            kept = copy_gallery(files, gallery_dir(run_dir, name, setting.name))
        restorations.append({k: v / count for k, v in totals.items()})
        draws.append({**draw_record(d, 0, captions, scores), "restoration": restorations[-1]})
    restoration = {k: sum(r[k] for r in restorations) / len(restorations) for k in restorations[0]}
    if task.has_ground_truth and "lpips" not in restoration:
        restoration["lpips"] = None
    result = {
        "kind": RESULT_KIND, **run_fields(run_dir), "task": task.name,
        "benchmark": name, "setting": setting.name, "sampler": setting.sampler, "nfe": setting.nfe,
        "guidance": setting.guidance, **summarise_draws(draws), "draws": draws,
        "gallery": relative_paths(kept, run_dir), "gallery_prompts": captions[:len(kept)],
        "restoration": restoration, "num_images": count, "images_generated": count * len(draws),
        "wall_time_s": {**seconds, "total": time.perf_counter() - start},
        "spec_hash": digest, "protocol_hash": protocol_hash(spec), "spec": spec, "model": model,
        "prompts": {"source": "held-out conditions", "keys_sha256": sha256_json(list(batch["key"]))},
        "images": str(directory),
        "versions": {p: version(p) for p in ("torch", "diffusers", "clean-fid", "open_clip_torch", "torchmetrics")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if scorer.lpips() is None and task.has_ground_truth:
        result["lpips_note"] = scorer.lpips_note
    write_json_atomic(out, result)
    log.info("%s: %s %s FID %.4f CLIP %.4f %s", run_dir, name, setting.name, result["fid"],
             result["clip_score"], restoration)
    return result


def evaluate_task(backbone: Backbone, task: Task, cfg: TrainConfig, student_nfe: list[int] | None = None,
                  count: int = 16, teacher: bool = True, lpips: torch.nn.Module | str | None = "auto",
                  lpips_weights: str | None = None, seed: int = 0) -> dict:
    """Scores of the student (each NFE, no CFG) and the teacher (its budget, CFG) on ``count`` held-out
    conditions (those of the sample grid): PSNR / SSIM / LPIPS against the ground truth when the task
    has one, and the task's condition metrics. ``lpips``: a built network, ``"auto"`` (built when the
    VGG16 weights are here) or None. JSON-ready: ``{"task", "count", "samplers": {name: {metric: value}}, ...}``."""
    device = next(backbone.denoiser.parameters()).device
    batch = to_device(grid_conditions(cfg, count), device)  # unswapped: face swapping has its ground truth
    truth = task.ground_truth(batch)
    net = lpips
    notes = {}
    if truth is not None and lpips == "auto":
        net, note = optional_lpips(lpips_weights)
        if net is None:
            notes["lpips_note"] = note
    settings = [SamplerSetting("student", n, cfg.backbone.student_guidance) for n in (student_nfe or list(cfg.trainer.sample_nfe))]
    if teacher:
        ts = cfg.backbone.teacher_sampling
        settings.append(SamplerSetting("teacher", ts.steps, ts.guidance))
    results = {}
    for setting, _, scores in sample_and_score(backbone, task, batch, settings, seed,
                                               lpips=net if isinstance(net, torch.nn.Module) else None):
        results[setting.name] = scores
        log.info("%s %s: %s", task.name, setting.name, scores)
    return {"kind": "flash_exp.restoration", "task": task.name, "count": int(batch["pixels"].shape[0]),
            "seed": seed, "ground_truth": truth is not None, "samplers": results, **notes}
