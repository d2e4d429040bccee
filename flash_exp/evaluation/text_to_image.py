"""A text-to-image run: each benchmark's prompts sampled by the student and the teacher, then scored.

Teacher baselines do not depend on the run: they are computed once per teacher under
``<cache_dir>/teachers`` and copied into every run that shares the teacher and the spec.
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

from flash_exp.evaluation.generate import generate_images
from flash_exp.evaluation.image_files import claim
from flash_exp.evaluation.run_models import RunPipelines, run_models
from flash_exp.evaluation.scoring import PreparedBenchmark, Scorer
from flash_exp.evaluation.settings import sampler_settings
from flash_exp.files import write_json_atomic
from flash_exp.metrics.hashing import sha256_json
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
    if setting.sampler == "teacher":
        shared = scorer.cache_dir / "teachers" / sha256_json(model)[:16] / name / digest[:16]
        cached = read_json(shared / TEACHER_RESULT_FILE)
        if cached is not None and cached.get("spec_hash") == digest and cached.get("model") == model:
            result = {**cached, **run_fields(run_dir), "reused_from": str(shared)}
            write_json_atomic(out, result)
            return result
    directory = shared if shared is not None else images_dir(run_dir, name, setting.name)
    claim(directory, {"spec_hash": digest, "model": model})
    start = time.perf_counter()
    report = generate_images(pipeline, bench.prompt_set.prompts, directory, setting, bench.config.seed,
                             resolution, scorer.settings.batch_size,
                             description=f"{run_dir.name} {name} {setting.name}")
    scores = scorer.score(bench, report.files)
    result = {
        "kind": RESULT_KIND, **run_fields(run_dir),
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
    if not scorer.settings.keep_images:
        for png in report.files:
            png.unlink(missing_ok=True)
    log.info("%s: %s %s FID %.4f CLIP %.4f", run_dir, name, setting.name, result["fid"], result["clip_score"])
    return result
