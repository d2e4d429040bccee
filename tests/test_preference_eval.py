"""Preference scores in the evaluation: listed by a benchmark's ``metrics:``, checked before any image is
generated, computed on the generated PNGs in the same pass, pinned in the spec; prefetch assembles the
weights directory each scorer reads."""

from __future__ import annotations

import functools
import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from flash_exp.config import ConfigError
from flash_exp.evaluation import evaluate
from flash_exp.metrics import preference
from flash_exp.metrics.benchmarks import load_benchmark
from flash_exp.metrics.preference import HPSv21
from flash_exp.metrics.registry import METRICS, MetricUnavailable
from flash_exp.metrics.results import read_json, result_path
from tests.fixtures_eval import REPO, compose_evaluate
from tests.test_preference import PREFERENCE, tiny_open_clip

pytest_plugins = ["tests.fixtures_eval"]


def settings(run: Path, tmp_path: Path, toy_clip_dir: Path, toy_shards: list[str], metrics: str, *extra: str):
    return OmegaConf.to_object(compose_evaluate([
        f"run_dir={run}", "student_nfe=[1]", "teacher_nfe=[]", "teacher_full=false", f"cache_dir={tmp_path / 'cache'}",
        "device=cpu", "batch_size=4", "eval=toy", f"toy_clip_dir={toy_clip_dir}", "+eval.options.toy.num_images=4",
        f"+eval.options.toy.toy.shards=[{','.join(toy_shards)}]", f"+eval.options.toy.metrics={metrics}", *extra]))


def test_an_unknown_metric_is_refused_with_the_allowed_names():
    with pytest.raises(ConfigError, match=r"toy\.metrics='imagereward_v2'.*allowed values are cmmd, fd_dinov2, "
                                          r"diversity, imagereward, pickscore, hpsv21, aesthetic"):
        load_benchmark("toy", overrides={"metrics": ["imagereward_v2"]})


def test_a_missing_preference_weight_stops_evaluate_with_exit_code_2_before_any_generation(tiny_run, tmp_path):
    command = [sys.executable, "-m", "flash_exp.evaluate", f"run_dir={tiny_run}", "device=cpu",
               f"cache_dir={tmp_path / 'cache'}", "eval=toy", "+eval.options.toy.metrics=[pickscore]",
               f"metric_weights.pickscore={tmp_path / 'no-pickscore'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "error: metric 'pickscore' needs its weights at metric_weights.pickscore=" in done.stderr
    assert "hf download yuvalkirstain/PickScore_v1" in done.stderr
    assert not (tiny_run / "eval" / "toy").exists() and not (tmp_path / "cache").exists()


def test_a_listed_preference_score_is_computed_on_the_generated_images_and_pinned(tiny_run, toy_clip_dir, toy_shards,
                                                                                   tmp_path, monkeypatch):
    model = tiny_open_clip(tmp_path / "configs", "tiny-hps-eval")
    weights = tmp_path / "hps" / "HPS_v2.1_compressed.pt"
    weights.parent.mkdir()
    torch.save({"state_dict": model.state_dict()}, weights)
    monkeypatch.setitem(preference.SCORERS, "hpsv21", functools.partial(HPSv21, model="tiny-hps-eval"))
    s = settings(tiny_run, tmp_path, toy_clip_dir, toy_shards, "[hpsv21]", f"metric_weights.hpsv21={weights.parent}")
    assert evaluate(s) == 0

    result = read_json(result_path(tiny_run, "toy", "student_nfe1"))
    pngs = sorted((tiny_run / "eval" / "toy" / "student_nfe1" / "draw0").glob("*.png"))
    assert len(pngs) == 4 and math.isfinite(result["hpsv21"]) and result["hpsv21_std"] is None
    prompts = [p["prompt"] if isinstance(p, dict) else p for p in result["gallery_prompts"]]
    direct = HPSv21(weights.parent, model="tiny-hps-eval").score([Image.open(p) for p in pngs], prompts)
    assert result["hpsv21"] == pytest.approx(float(np.mean(direct)), abs=1e-6)
    assert result["draws"][0]["hpsv21"] == result["hpsv21"]
    pinned = result["spec"]["protocol"]["metrics"]["hpsv21"]
    assert pinned["weights_sha256"] == {"HPS_v2.1_compressed.pt": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert pinned["weights"] == "xswu/HPSv2/HPS_v2.1_compressed.pt"


def test_prefetch_lists_each_listed_scorer_s_weights_directory():
    from flash_exp.config import compose_train_config
    from flash_exp.prefetch.listing import plan

    items, _ = plan(compose_train_config(["backbone=sd15", "eval=toy", f"+eval.options.toy.metrics=[{','.join(PREFERENCE)}]"]))
    assert [(i.what, i.name, i.env_var) for i in items[-4:]] == [
        ("imagereward", "THUDM/ImageReward + bert-base-uncased", "FLASH_EXP_IMAGEREWARD_WEIGHTS"),
        ("pickscore", "yuvalkirstain/PickScore_v1 + laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "FLASH_EXP_PICKSCORE_WEIGHTS"),
        ("hpsv21", "xswu/HPSv2", "FLASH_EXP_HPSV21_WEIGHTS"),
        ("aesthetic", "sac+logos+ava1-l14-linearMSE.pth + timm/vit_large_patch14_clip_224.openai",
         "FLASH_EXP_AESTHETIC_WEIGHTS"),
    ]
    plain, _ = plan(compose_train_config(["backbone=sd15", "eval=toy"]))
    assert not any(i.what in PREFERENCE for i in plain)


def test_what_prefetch_fetches_is_what_the_scorers_read(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.errors
    import torch.hub

    from flash_exp.prefetch.items import MetricFiles

    calls = []

    def hub_download(repo, filename, local_dir=None, **kw):
        calls.append((repo, filename))
        if filename == "model.safetensors":  # a repository with only the .bin: the alternative is fetched
            raise huggingface_hub.errors.EntryNotFoundError(filename)
        (Path(local_dir) / filename).write_bytes(b"w")
        return str(Path(local_dir) / filename)

    def url_download(url, dst, **kw):
        calls.append((url, "url"))
        Path(dst).write_bytes(b"w")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", url_download)
    cache = tmp_path / "cache"
    for name in PREFERENCE:
        item = MetricFiles(name, name, "evaluate", metric=name, env_var=f"FLASH_EXP_{name.upper()}_WEIGHTS")
        assert item.find(cache) is None
        path = item.fetch(cache)
        assert item.find(cache) == path == cache / "metrics" / name
        METRICS[name].check_available(str(path))  # the directory the scorer reads is complete
        assert item.env(cache, path) == {f"FLASH_EXP_{name.upper()}_WEIGHTS": f"$FLASH_EXP_CACHE/metrics/{name}"}
    assert ("yuvalkirstain/PickScore_v1", "pytorch_model.bin") in calls
    assert ("xswu/HPSv2", "HPS_v2.1_compressed.pt") in calls
    assert any(c[1] == "url" and c[0].endswith("sac+logos+ava1-l14-linearMSE.pth") for c in calls)
    with pytest.raises(MetricUnavailable):
        METRICS["hpsv21"].check_available(str(tmp_path / "elsewhere"))
