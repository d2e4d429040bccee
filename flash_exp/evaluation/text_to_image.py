"""A text-to-image run: each benchmark's prompts sampled by the student and the teacher, then scored.

Each benchmark x sampler setting is scored over ``eval.draws`` draws (``images_per_prompt`` images of
each prompt, each from its own noise) (draw ``d``'s images in
``<setting>/draw<d>/``, each draw resumable on its own); the result holds each draw's scores, their
mean and spread, and a gallery of draw 0's first images. Teacher baselines do not depend on the run:
they are computed once per teacher under ``<cache_dir>/teachers`` and copied (gallery included) into
every run that shares the teacher and the spec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime, timezone
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from flash_exp.evaluation.gallery import GALLERY_DIR, copy_gallery, gallery_dir, relative_paths
from flash_exp.evaluation.generate import generate_images
from flash_exp.evaluation.image_files import claim
from flash_exp.evaluation.run_models import RunPipelines, run_models
from flash_exp.evaluation.scoring import PreparedBenchmark, Scorer
from flash_exp.evaluation.settings import sampler_settings
from flash_exp.files import write_json_atomic
from flash_exp.metrics.draws import draw_record, summarise_draws
from flash_exp.metrics.hashing import sha256_json
from flash_exp.metrics.noise import image_noise_seeds
from flash_exp.metrics.results import RESULT_KIND, images_dir, read_json, result_in_place
from flash_exp.metrics.spec import SamplerSetting, eval_spec, protocol_hash, sampler_spec, spec_hash
from flash_exp.training.rundir import run_fields, student_file

log = logging.getLogger("flash_exp.evaluate")

TEACHER_RESULT_FILE = "result.json"


def score_t2i_run(scorer: Scorer, run_dir: Path) -> list[dict[str, Any]]:
    """Every configured benchmark x sampler setting of the text-to-image run ``run_dir``; returns the results."""
    backbone, teacher, student = run_models(run_dir, scorer.cache_dir)
    pipelines = RunPipelines(backbone, student_file(run_dir).parent, scorer.device)
    s = scorer.settings
    results = []
    for name in s.eval.benchmarks:
        bench = scorer.prepare(name)
        for setting in sampler_settings(backbone, s.student_nfe, s.teacher_nfe, s.teacher_full):
            is_student = setting.sampler == "student"
            scheduler = backbone.student_scheduler if is_student else backbone.teacher_sampling.scheduler
            spec = eval_spec(bench.protocol, sampler_spec(setting, asdict(scheduler), backbone.resolution))
            model = {"kind": setting.sampler, **(student if is_student else teacher)}
            results.append(score_t2i_setting(scorer, Path(run_dir), bench, setting, spec, model,
                                             partial(pipelines.get, setting.sampler), backbone.resolution))
    return results


def score_t2i_setting(scorer: Scorer, run_dir: Path, bench: PreparedBenchmark, setting: SamplerSetting,
                      spec: dict[str, Any], model: dict[str, Any], pipeline: Callable[[], Any],
                      resolution: int) -> dict[str, Any]:
    """One benchmark x sampler setting: the result in place when its spec and model are unchanged, the
    teacher's cached result when another run computed it, else generate (resuming), score and write."""
    name, digest = bench.config.name, spec_hash(spec)
    out, existing = result_in_place(run_dir, name, setting.name, digest, model)
    if existing is not None:
        log.info("%s: %s %s is up to date", run_dir, name, setting.name)
        return existing
    shared = None
    gallery = gallery_dir(run_dir, name, setting.name)
    if setting.sampler == "teacher":
        shared = scorer.cache_dir / "teachers" / sha256_json(model)[:16] / name / digest[:16]
        cached = read_json(shared / TEACHER_RESULT_FILE)
        if cached is not None and cached.get("spec_hash") == digest and cached.get("model") == model:
            copy_gallery(sorted((shared / GALLERY_DIR).glob("*.png")), gallery)
            result = {**cached, **run_fields(run_dir), "reused_from": str(shared)}
            write_json_atomic(out, result)
            return result
    directory = shared if shared is not None else images_dir(run_dir, name, setting.name)
    claim(directory, {"spec_hash": digest, "model": model})
    start = time.perf_counter()
    draws, scored, generated, seconds = [], [], 0, {"generation": 0.0, "fid": 0.0, "clip": 0.0, "metrics": 0.0}
    for d, (offset, prompts) in enumerate(bench.draws):
        report = generate_images(pipeline, prompts, directory / f"draw{d}", setting,
                                 image_noise_seeds(bench.config.seed, d, range(len(prompts))), resolution,
                                 scorer.settings.batch_size,
                                 description=f"{run_dir.name} {name} {setting.name} draw {d}")
        scores = scorer.score(bench, report.files, prompts, draw=d)
        if d == 0:
            kept = copy_gallery(report.files, gallery)
            gallery_prompts = prompts[:len(kept)]
            if shared is not None:
                copy_gallery(report.files, shared / GALLERY_DIR)
        draws.append(draw_record(d, offset, prompts, scores))
        generated += report.generated
        for key, value in (("generation", report.seconds), ("fid", scores["fid_s"]), ("clip", scores["clip_s"]),
                           ("metrics", scores["metrics_s"])):
            seconds[key] += value
        scored.extend(report.files)
    result = {
        "kind": RESULT_KIND, **run_fields(run_dir),
        "benchmark": name, "setting": setting.name, "sampler": setting.sampler, "nfe": setting.nfe,
        "guidance": setting.guidance, **summarise_draws(draws), "draws": draws,
        "gallery": relative_paths(kept, run_dir), "gallery_prompts": gallery_prompts,
        "num_images": len(bench.draws[0][1]), "images_generated": generated,
        "wall_time_s": {**seconds, "total": time.perf_counter() - start},
        "spec_hash": digest, "protocol_hash": protocol_hash(spec), "spec": spec, "model": model,
        "prompts": bench.prompt_set.provenance, "images": str(directory),
        "versions": {p: version(p) for p in ("torch", "diffusers", "clean-fid", "open_clip_torch")},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if shared is not None:
        write_json_atomic(shared / TEACHER_RESULT_FILE, result)
    write_json_atomic(out, result)
    if not scorer.settings.keep_images:
        for png in scored:
            png.unlink(missing_ok=True)
    log.info("%s: %s %s FID %.4f (sd %s over %d draws) CLIP %.4f recall %s", run_dir, name, setting.name,
             result["fid"], result["fid_std"], len(draws), result["clip_score"], result["recall"])
    return result

