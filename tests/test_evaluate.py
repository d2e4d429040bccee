"""Evaluation of runs: resumable generation, the toy and COCO benchmarks end to end, runs_dir mode."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from flash_exp.evaluation import EvaluateConfig, evaluate
from flash_exp.evaluation.generate import generate_images
from flash_exp.metrics.clip_score import open_clip_model
from flash_exp.metrics.features import FeatureExtractor
from flash_exp.metrics.fid import fid_from_features, image_features
from flash_exp.metrics.results import read_json, result_path, status_path
from flash_exp.metrics.spec import SamplerSetting
from flash_exp.training.rundir import load_backbone
from tests.fixtures_eval import REPO, TINY_CLIP, TinyFeatures, compose_evaluate, random_images, write_run

pytest_plugins = ["tests.fixtures_eval"]

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a cat", "a dog", "a yellow kite"]
SEEDS = list(range(100, 106))


def settings(overrides: list[str]) -> EvaluateConfig:
    return OmegaConf.to_object(compose_evaluate(overrides))  # type: ignore[return-value]


def toy_overrides(tmp_path: Path, toy_clip_dir: Path, toy_shards: list[str], count: int = 8) -> list[str]:
    return [f"cache_dir={tmp_path / 'cache'}", "device=cpu", "batch_size=4", "eval=toy",
            f"toy_clip_dir={toy_clip_dir}", f"+eval.options.toy.num_images={count}",
            f"+eval.options.toy.toy.shards=[{','.join(toy_shards)}]", "eval.benchmarks=[toy]"]


class Interrupting:
    """Wraps a pipeline; raises on call number ``stop_at`` (a kill between batches) and counts images."""

    def __init__(self, pipe, stop_at: int | None = None) -> None:
        self.pipe, self.stop_at, self.calls, self.images = pipe, stop_at, 0, 0

    def __call__(self, **kwargs):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            raise KeyboardInterrupt
        self.images += len(kwargs["prompt"])
        return self.pipe(**kwargs)


def test_interrupted_generation_resumes_with_only_the_missing_images(tiny_run, tiny_clip_weights, tmp_path):
    from flash_exp.backbones import load_pipeline

    pipe = load_pipeline(load_backbone(tiny_run), tiny_run / "export", sampler="student")
    setting = SamplerSetting("student", 2, 0.0)
    full = generate_images(lambda: pipe, PROMPTS, tmp_path / "full", setting, SEEDS, 32, batch_size=2)
    assert full.generated == 6

    first = Interrupting(pipe, stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        generate_images(lambda: first, PROMPTS, tmp_path / "resumed", setting, SEEDS, 32, batch_size=2)
    kept = sorted((tmp_path / "resumed").glob("*.png"))
    assert [p.name for p in kept] == ["000000.png", "000001.png", "000002.png", "000003.png"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}
    (tmp_path / "resumed" / ".000004.png.999.tmp").write_bytes(b"half a png")  # a kill during a write

    second = Interrupting(pipe)
    report = generate_images(lambda: second, PROMPTS, tmp_path / "resumed", setting, SEEDS, 32, batch_size=2)
    assert (report.generated, second.images, second.calls) == (2, 2, 1)
    assert before == {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in kept}
    assert not list((tmp_path / "resumed").glob(".*.tmp"))
    for a, b in zip(full.files, report.files, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))

    extractor = FeatureExtractor("tiny", TinyFeatures(8).eval(), 32, "0" * 64, torch.device("cpu"))
    reference = image_features(random_images(tmp_path / "ref", 16), extractor, 32)
    clip = open_clip_model(TINY_CLIP, "test", tiny_clip_weights)
    from flash_exp.metrics.clip_score import clip_scores

    numbers = [(fid_from_features(image_features(r.files, extractor, 32), reference),
                clip_scores(r.files, PROMPTS, clip, 32).mean()) for r in (full, report)]
    assert numbers[0] == numbers[1] and math.isfinite(numbers[0][0])


def test_evaluate_config_yaml_matches_the_schema_defaults():
    composed = OmegaConf.to_container(compose_evaluate(["run_dir=x"]), resolve=True)
    schema = OmegaConf.to_container(OmegaConf.structured(EvaluateConfig(run_dir="x")), resolve=True)
    assert composed == schema
    assert composed["eval"]["benchmarks"] == ["toy", "toy_diversity"] and composed["student_nfe"] == [1, 2, 4]


def test_toy_benchmark_end_to_end_in_process(tiny_run, toy_clip_dir, toy_shards, tmp_path):
    s = settings([f"run_dir={tiny_run}", "student_nfe=[1,2]", "teacher_nfe=[1]",
                  *toy_overrides(tmp_path, toy_clip_dir, toy_shards)])
    assert evaluate(s) == 0
    names = ["student_nfe1", "student_nfe2", "teacher_nfe1", "teacher_nfe2"]  # teacher_nfe2: its full budget
    results = {n: read_json(result_path(tiny_run, "toy", n)) for n in names}
    for name, r in results.items():
        assert r is not None, name
        assert r["num_images"] == 8 and math.isfinite(r["fid"]) and r["fid"] >= 0.0
        assert -1.0 <= r["clip_score"] <= 1.0
        assert r["spec"]["protocol"]["num_images"] == 8 and r["spec"]["sampler"]["nfe"] == r["nfe"]
        assert r["spec"]["protocol"]["fid"]["features"]["name"] == "clip-image:toy-clip"
    assert results["student_nfe1"]["guidance"] == 0.0 and results["teacher_nfe1"]["guidance"] == 3.0
    assert len({r["protocol_hash"] for r in results.values()}) == 1
    assert len({r["spec_hash"] for r in results.values()}) == 4
    assert results["student_nfe1"]["fid"] != results["teacher_nfe1"]["fid"]  # the LoRA changes the samples
    assert len(list((tiny_run / "eval" / "toy" / "student_nfe1" / "draw0").glob("*.png"))) == 8

    mtimes = {n: result_path(tiny_run, "toy", n).stat().st_mtime_ns for n in names}
    assert evaluate(s) == 0  # everything up to date: nothing regenerated or rescored
    assert mtimes == {n: result_path(tiny_run, "toy", n).stat().st_mtime_ns for n in names}
    assert read_json(status_path(tiny_run))["status"] == "evaluated"


def test_runs_dir_records_failed_and_unfinished_runs_and_shares_teachers(tiny_sd_dir, toy_clip_dir, toy_shards,
                                                                         tmp_path):
    runs = tmp_path / "runs"
    ready = [write_run(runs / "sweeps" / "2025-01-01_00-00-00" / str(i), tiny_sd_dir,
                       [f"loss.distill.type={t}"], lora_seed=i) for i, t in enumerate(("l2", "l1"))]
    (runs / "sweeps" / "2025-01-01_00-00-00" / "multirun.yaml").write_text("{}\n")
    unfinished = write_run(runs / "toy" / "unfinished", tiny_sd_dir)
    (unfinished / "export" / "pytorch_lora_weights.safetensors").unlink()
    failed = write_run(runs / "toy" / "failed", tiny_sd_dir)
    (failed / "FAILED").write_text("CUDA out of memory\ntraceback...\n")

    s = settings([f"runs_dir={runs}", "student_nfe=[1]", "teacher_nfe=[]",
                  *toy_overrides(tmp_path, toy_clip_dir, toy_shards)])
    assert evaluate(s) == 0  # failed and unfinished runs are recorded, not errors of the evaluation
    assert read_json(status_path(unfinished))["status"] == "unfinished"
    status = read_json(status_path(failed))
    assert (status["status"], status["reason"]) == ("failed", "FAILED: CUDA out of memory")
    assert not result_path(failed, "toy", "student_nfe1").exists()
    for run in ready:
        assert read_json(status_path(run))["status"] == "evaluated"
        assert read_json(result_path(run, "toy", "student_nfe1"))["sweep"] == str(run.parent.resolve())
    teachers = [read_json(result_path(run, "toy", "teacher_nfe2")) for run in ready]
    assert teachers[0]["fid"] == teachers[1]["fid"] and "reused_from" in teachers[1]
    assert teachers[1]["images_generated"] == 8  # the first run's generation, reused
    students = [read_json(result_path(run, "toy", "student_nfe1")) for run in ready]
    assert students[0]["model"]["lora_sha256"] != students[1]["model"]["lora_sha256"]


@pytest.mark.slow
def test_coco_benchmark_end_to_end_offline(tiny_run, coco_root, tiny_inception, tiny_clip_weights, tmp_path,
                                           monkeypatch):
    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("download attempted"))
    s = settings([f"run_dir={tiny_run}", "eval=coco2017_5k", f"coco_root={coco_root}", f"inception={tiny_inception}",
                  f"+clip_weights.{TINY_CLIP}={tiny_clip_weights}", f"cache_dir={tmp_path / 'cache'}", "device=cpu",
                  "+eval.options.coco2017_5k.num_images=12", f"+eval.options.coco2017_5k.clip.model={TINY_CLIP}",
                  "+eval.options.coco2017_5k.clip.pretrained=test", "student_nfe=[1]", "teacher_nfe=[]",
                  "teacher_full=false", "batch_size=6"])
    assert evaluate(s) == 0
    r = read_json(result_path(tiny_run, "coco2017_5k", "student_nfe1"))
    assert r["num_images"] == 12 and math.isfinite(r["fid"]) and r["fid"] > 0.0
    assert -1.0 <= r["clip_score"] <= 1.0
    protocol = r["spec"]["protocol"]
    assert protocol["fid"]["features"]["name"] == "inception-2015-12-05"
    assert protocol["fid"]["reference"]["count"] == 12 and protocol["eval_res"] == 256
    assert protocol["clip"]["model"] == TINY_CLIP and protocol["clip"]["text_prefix"] == ""
    assert r["prompts"]["caption_seed"] == 0
    assert len(list((tmp_path / "cache" / "fid_stats").glob("*.npz"))) == 1
    before = result_path(tiny_run, "coco2017_5k", "student_nfe1").stat().st_mtime_ns
    assert evaluate(s) == 0
    assert result_path(tiny_run, "coco2017_5k", "student_nfe1").stat().st_mtime_ns == before


@pytest.mark.slow
def test_evaluate_and_leaderboard_command_lines(tiny_run, toy_clip_dir, toy_shards, tmp_path):
    overrides = [f"run_dir={tiny_run}", "student_nfe=[1]", "teacher_nfe=[]", "teacher_full=false",
                 *toy_overrides(tmp_path, toy_clip_dir, toy_shards)]
    done = subprocess.run([sys.executable, "-m", "flash_exp.evaluate", *overrides], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_json(result_path(tiny_run, "toy", "student_nfe1"))
    assert result["num_images"] == 8
    out = tmp_path / "board"
    done = subprocess.run([sys.executable, "-m", "flash_exp.leaderboard", "--runs-dir", str(tiny_run.parent.parent),
                           "--out-dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # columns: rank, run, sampler, train steps (data batches trained), NFE, CFG, FID
    row = rf"\| student \| (\d+|-) \| 1 \| 0 \| {result['fid']:.3f} \|"
    assert re.search(row, (out / "leaderboard.md").read_text())
    assert "data:image/png;base64," in (out / "leaderboard.html").read_text()
    missing = subprocess.run([sys.executable, "-m", "flash_exp.evaluate", f"run_dir={tiny_run}", "eval=coco2017_5k",
                              f"coco_root={tmp_path / 'no-coco'}", f"cache_dir={tmp_path / 'cache'}"], cwd=REPO,
                             capture_output=True, text=True, timeout=600)
    assert missing.returncode == 2 and "COCO_ROOT" in missing.stderr
    assert str(tmp_path / "no-coco" / "annotations" / "captions_val2017.json") in missing.stderr


def test_a_run_trained_with_lpips_loads_its_student_without_lpips_or_the_discriminator(tiny_sd_dir, tmp_path,
                                                                                      monkeypatch):
    """Export, evaluation and sampling load a run's student (backbone, task, LoRA weights) without the
    training module: no VGG16 file, no LPIPS network, no discriminator head, the checkpoint's tensors."""
    import flash_exp.method.discriminator as discriminator
    import flash_exp.metrics.restoration as restoration
    import flash_exp.training.module as module
    from flash_exp.training.student import Student, load_exported_run, load_run
    from tests.conftest import solid_samples, write_shard
    from tests.fixtures_train import tiny_train_cfg

    def refuse(*args, **kwargs):
        raise AssertionError("loading a student built a training-only model")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no VGG16 weights here
    monkeypatch.setattr(restoration, "build_lpips", refuse)
    monkeypatch.setattr(module, "build_lpips", refuse)
    monkeypatch.setattr(discriminator.DiscriminatorHead, "__init__", refuse)
    cfg = tiny_train_cfg(tiny_sd_dir, [str(write_shard(tmp_path / "a.tar", solid_samples(2)))],
                         "loss.distill.type=lpips")
    assert cfg.loss.distill.type == "lpips" and cfg.loss.adversarial.enabled
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.structured(cfg), run / ".hydra" / "config.yaml")
    trained = Student(cfg)
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) for k, v in trained.trainable_state_dict().items()}
    assert state and all(".lora_" in k for k in state)
    trained.load_state_dict(state, strict=False)
    trained.backbone.export(run / "export")
    (run / "checkpoints").mkdir()
    torch.save({"state_dict": {**state, "distiller.discriminator.weight": torch.zeros(1)}, "global_step": 7},
               run / "checkpoints" / "last.ckpt")

    loaded_cfg, student, step = load_run(run)
    assert loaded_cfg.loss.distill.type == "lpips" and step == 7
    assert not hasattr(student, "distiller")
    got = student.trainable_state_dict()
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)
    _, exported = load_exported_run(run)
    lora = exported.state_dict()  # the export is loaded as the adapter "flash"
    assert all(torch.allclose(lora[k.replace(".default.", ".flash.")], state[k]) for k in state)


def test_two_draws_on_the_toy_benchmark_report_their_mean_and_sd_and_keep_a_gallery(tiny_run, toy_clip_dir,
                                                                                       toy_shards, tmp_path):
    import shutil
    import statistics

    overrides = ["student_nfe=[1]", "teacher_nfe=[]", "eval.draws=2", "keep_images=false",
                 *toy_overrides(tmp_path, toy_clip_dir, toy_shards)]
    assert evaluate(settings([f"run_dir={tiny_run}", *overrides])) == 0
    captions = [f"a {c} square on a white background" for c in ("red", "green", "blue")]
    for name in ("student_nfe1", "teacher_nfe2"):
        r = read_json(result_path(tiny_run, "toy", name))
        assert [d["draw"] for d in r["draws"]] == [0, 1]
        fids = [d["fid"] for d in r["draws"]]
        assert r["fid"] == pytest.approx(statistics.mean(fids))
        assert r["fid_std"] == pytest.approx(statistics.stdev(fids)) and r["fid_std"] > 0
        assert r["clip_score_std"] == pytest.approx(statistics.stdev(d["clip_score"] for d in r["draws"]))
        assert r["kid"] == pytest.approx(statistics.mean(d["kid"] for d in r["draws"])) and math.isfinite(r["kid"])
        assert r["kid_std"] == r["draws"][0]["kid_std"]
        for key in ("precision", "recall", "density", "coverage"):
            assert r[key] == pytest.approx(statistics.mean(d[key] for d in r["draws"])) and r[key] >= 0.0
        # the 24 held-out captions hold two disjoint sets of 8: the second draw takes captions 8..15
        assert [d["prompt_offset"] for d in r["draws"]] == [0, 8]
        assert len(set(r["spec"]["protocol"]["draws"]["prompt_sets_sha256"])) == 2
        assert r["gallery"] == [f"eval/toy/gallery/{name}/{i:06d}.png" for i in range(8)]
        assert r["gallery_prompts"] == [captions[i % 3] for i in range(8)]
        assert all((tiny_run / p).is_file() for p in r["gallery"])  # kept although keep_images is false
    assert not list((tiny_run / "eval" / "toy" / "student_nfe1").rglob("*.png"))

    other = Path(shutil.copytree(tiny_run, tmp_path / "runs" / "tiny" / "other"))
    shutil.rmtree(other / "eval")
    assert evaluate(settings([f"run_dir={other}", *overrides])) == 0
    teacher = read_json(result_path(other, "toy", "teacher_nfe2"))
    assert "reused_from" in teacher  # the cached teacher result, its gallery copied into this run
    first = read_json(result_path(tiny_run, "toy", "teacher_nfe2"))["gallery"]
    for a, b in zip(first, teacher["gallery"], strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(tiny_run / a)), np.asarray(Image.open(other / b)))
