"""The optional metrics (CMMD, FD-DINOv2, per-prompt diversity) against their published formulas and
reference packages, tiny stand-in models of the same architectures saved locally, the checks that fail
before any image is generated, and the leaderboard's directions."""

from __future__ import annotations

import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flash_exp.config import ConfigError
from flash_exp.metrics.benchmarks import load_benchmark
from flash_exp.metrics.cmmd import gaussian_mmd
from flash_exp.metrics.diversity import mean_pairwise_lpips, mean_vendi, vendi_score
from flash_exp.metrics.registry import METRICS, MetricContext, MetricUnavailable, ScoreInput, arrow
from flash_exp.metrics.spec import ScoreSettings, protocol_spec
from tests.fixtures_eval import REPO, random_images

pytest_plugins = ["tests.fixtures_eval"]


# ------------------------------------------------------------------------------------- the formulas
def reference_cmmd(x: np.ndarray, y: np.ndarray) -> float:
    """google-research/cmmd distance.mmd, written out (sigma 10, scale 1000, means over full matrices)."""
    x_sq, y_sq = np.diag(x @ x.T), np.diag(y @ y.T)
    gamma = 1 / (2 * 10**2)
    k_xx = np.mean(np.exp(-gamma * (-2 * x @ x.T + x_sq[:, None] + x_sq[None, :])))
    k_xy = np.mean(np.exp(-gamma * (-2 * x @ y.T + x_sq[:, None] + y_sq[None, :])))
    k_yy = np.mean(np.exp(-gamma * (-2 * y @ y.T + y_sq[:, None] + y_sq[None, :])))
    return 1000 * (k_xx + k_yy - 2 * k_xy)


def reference_vendi(x: np.ndarray) -> float:
    """exp of the Shannon entropy of the eigenvalues of K/n, K the cosine similarities (Friedman & Dieng 2023)."""
    z = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(z @ z.T / len(z))
    lam = lam[lam > 1e-15]
    return float(np.exp(-(lam * np.log(lam)).sum()))


def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), scipy's sqrtm."""
    from scipy.linalg import sqrtm

    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))


def test_cmmd_is_the_reference_mmd_on_fixed_embeddings():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 24))
    y = rng.normal(0.3, 1.2, size=(30, 24))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert gaussian_mmd(x, y) == pytest.approx(reference_cmmd(x, y), abs=1e-5)
    far = rng.normal(size=(30, 24)) * 5
    assert gaussian_mmd(x, far) == pytest.approx(reference_cmmd(x, far), abs=1e-5)
    assert gaussian_mmd(x, x) == pytest.approx(0.0, abs=1e-9)


def test_vendi_is_the_published_formula_and_the_vendi_score_package():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 16))
    assert vendi_score(x) == pytest.approx(reference_vendi(x), abs=1e-5)
    vendi = pytest.importorskip("vendi_score.vendi")
    assert vendi_score(x) == pytest.approx(float(vendi.score_dual(x)), abs=1e-5)
    same = np.repeat(x[:1], 4, axis=0)
    assert vendi_score(same) == pytest.approx(1.0, abs=1e-6)
    assert vendi_score(np.eye(5)) == pytest.approx(5.0, abs=1e-6)
    groups = rng.normal(size=(12, 16))  # 3 prompts x 4 images
    assert mean_vendi(groups, 4) == pytest.approx(np.mean([reference_vendi(groups[i:i + 4]) for i in (0, 4, 8)]),
                                                  abs=1e-5)


def test_pairwise_lpips_is_the_mean_over_each_prompts_pairs_of_the_lpips_package():
    lpips = pytest.importorskip("lpips")
    torch.manual_seed(0)
    # the package's own linear layers on a random AlexNet: no ImageNet download
    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False).eval()
    images = torch.rand(6, 3, 32, 32) * 2 - 1  # 2 prompts x 3 images
    with torch.no_grad():
        expected = np.mean([np.mean([float(net(images[i:i + 1], images[j:j + 1])) for i, j in
                                     combinations(range(start, start + 3), 2)]) for start in (0, 3)])
    assert mean_pairwise_lpips(images, 3, net) == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------ the scorers on tiny stand-ins
def write_tiny_clip_vision(directory: Path, size: int = 32) -> Path:
    """A seeded CLIPVisionModelWithProjection of ViT-L/14@336's kind (tiny) and its image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=size, patch_size=8, projection_dim=16)
    CLIPVisionModelWithProjection(config).eval().save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        directory)
    return directory


def write_tiny_dinov2(directory: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=224,
                          patch_size=14)
    Dinov2Model(config).eval().save_pretrained(directory)
    return directory


def scorer_of(name: str, weights: Path, tmp_path: Path, reference: list[Path]):
    metric = METRICS[name]
    metric.check_available(str(weights))
    return metric.load(MetricContext(str(weights), torch.device("cpu"), tmp_path / "cache", {}, reference,
                                     {"benchmark": "test"}))


def pixels(files: list[Path]) -> np.ndarray:
    """(N, H, W, 3) float images in [0, 1]."""
    return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0 for f in files])


def test_cmmd_scorer_equals_the_reference_pipeline_on_a_tiny_clip(tmp_path):
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    weights = write_tiny_clip_vision(tmp_path / "clip")
    generated, reference = random_images(tmp_path / "gen", 10, seed=1), random_images(tmp_path / "ref", 12, seed=2)
    scorer = scorer_of("cmmd", weights, tmp_path, reference)
    spec = scorer.describe()
    assert spec["model"] == "openai/clip-vit-large-patch14-336" and len(spec["weights_sha256"]) == 64
    ours = scorer.score(ScoreInput(generated, ["p"] * 10, 1, 32, 4, 0, None))["cmmd"]

    # cmmd-pytorch's ClipEmbeddingModel.embed on images already at the input size (no resize)
    processor = CLIPImageProcessor.from_pretrained(weights)
    model = CLIPVisionModelWithProjection.from_pretrained(weights).eval()

    def embed(files):
        inputs = processor(images=list(pixels(files)), do_normalize=True, do_center_crop=False, do_resize=False,
                           do_rescale=False, return_tensors="pt")
        with torch.no_grad():
            emb = model(**inputs).image_embeds
        return (emb / torch.linalg.norm(emb, dim=-1, keepdim=True)).double().numpy()

    expected = reference_cmmd(embed(reference), embed(generated))
    assert ours == pytest.approx(expected, abs=1e-5) and ours > 0


def test_fd_dinov2_scorer_equals_dgm_eval_features_through_the_frechet_formula(tmp_path):
    import torchvision.transforms as T
    from transformers import Dinov2Model

    weights = write_tiny_dinov2(tmp_path / "dino")
    sizes = ((224, 224),)
    generated = random_images(tmp_path / "gen", 24, seed=1, sizes=sizes)
    reference = random_images(tmp_path / "ref", 24, seed=2, sizes=sizes)
    scorer = scorer_of("fd_dinov2", weights, tmp_path, reference)
    ours = scorer.score(ScoreInput(generated, ["p"] * 24, 1, 224, 8, 0, None))["fd_dinov2"]

    # dgm-eval's DINOv2 encoder: bicubic resize to 224 (identity here), ToTensor, ImageNet normalisation, CLS
    model = Dinov2Model.from_pretrained(weights).eval()
    transform = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])

    def features(files):
        with torch.no_grad():
            batch = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
            return model(pixel_values=batch).last_hidden_state[:, 0].double().numpy()

    assert ours == pytest.approx(reference_frechet(features(generated), features(reference)), abs=1e-5)


def test_diversity_scorer_averages_vendi_over_each_prompts_images(tmp_path):
    scorer = METRICS["diversity"].load(MetricContext(None, torch.device("cpu"), tmp_path, {"lpips_net": None}))
    feats = np.random.default_rng(3).normal(size=(8, 5))
    out = scorer.score(ScoreInput([Path("x")] * 8, ["a"] * 4 + ["b"] * 4, 4, 32, 4, 0, feats))
    assert out["lpips_diversity"] is None
    assert out["vendi"] == pytest.approx((reference_vendi(feats[:4]) + reference_vendi(feats[4:])) / 2, abs=1e-5)
    assert "lpips_diversity" not in scorer.describe()


# ------------------------------------------------------------------------- config, spec, errors
def test_benchmark_metrics_are_checked_by_name_and_diversity_needs_several_images_per_prompt(tmp_path):
    with pytest.raises(ConfigError, match=r"toy\.metrics='fidd'.*allowed values are cmmd, fd_dinov2, diversity"):
        load_benchmark("toy", overrides={"metrics": ["fidd"]})
    with pytest.raises(ConfigError, match=r"toy\.images_per_prompt=1.*diversity.*>= 2"):
        load_benchmark("toy", overrides={"metrics": ["diversity"]})
    cfg = load_benchmark("toy_diversity")
    assert cfg.images_per_prompt == 4 and cfg.metrics == ["diversity"]


def test_a_benchmark_without_optional_metrics_keeps_its_protocol_keys():
    args = ("toy", "p" * 64, 256, 32, 0, {"name": "f"}, {"count": 1}, {"model": "toy"}, False, ScoreSettings())
    plain = protocol_spec(*args)
    assert "metrics" not in plain and "images_per_prompt" not in plain
    assert protocol_spec(*args, None, 1, {}) == plain
    listed = protocol_spec(*args, None, 4, {"diversity": {"vendi": "v"}})
    assert listed["images_per_prompt"]["count"] == 4 and listed["metrics"] == {"diversity": {"vendi": "v"}}


def test_missing_weights_and_packages_name_what_to_fetch_or_install(tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match=r"metric_weights\.cmmd=.*hf download openai/clip-vit-large-patch14-336"):
        METRICS["cmmd"].check_available(str(tmp_path / "absent"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MetricUnavailable, match=r"alexnet-owt-7be5be79\.pth.*lpips_net: null"):
        METRICS["diversity"].check_available(None, {"lpips_net": "alex"})
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lpips" else real(name, *a))
    with pytest.raises(MetricUnavailable, match=r"'lpips', which is not installed: pip install '\.\[modern\]'"):
        METRICS["diversity"].check_available(None, {})
    METRICS["diversity"].check_available(None, {"lpips_net": None})  # Vendi only: nothing to install


def test_evaluate_stops_before_generating_when_a_metrics_weights_are_missing(tiny_run, tmp_path):
    bench_dir = tmp_path / "benchmarks"
    bench_dir.mkdir()
    (bench_dir / "toy_cmmd.yaml").write_text("name: toy_cmmd\nsource: toy\nfeatures: toy_clip\nnum_images: 4\n"
                                             "eval_res: 32\nmetrics: [cmmd]\nclip: {model: toy, pretrained: toyworld}\n")
    command = [sys.executable, "-m", "flash_exp.evaluate", f"run_dir={tiny_run}", "device=cpu",
               f"cache_dir={tmp_path / 'cache'}", f"benchmarks_dir={bench_dir}", "eval.benchmarks=[toy_cmmd]",
               f"metric_weights.cmmd={tmp_path / 'no-clip'}"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "metric 'cmmd' needs its weights at metric_weights.cmmd=" in done.stderr
    assert "hf download openai/clip-vit-large-patch14-336" in done.stderr
    assert not (tiny_run / "eval" / "toy_cmmd").exists() and not (tmp_path / "cache").exists()


# ------------------------------------------------------------------------ toy diversity end to end
def test_toy_diversity_is_scored_for_student_and_teacher_with_distinct_noise(tiny_run, toy_clip_dir, toy_shards,
                                                                            tmp_path):
    from omegaconf import OmegaConf

    from flash_exp.evaluation import evaluate
    from flash_exp.metrics.noise import image_noise_seeds
    from flash_exp.metrics.results import images_dir, read_json, result_path
    from tests.fixtures_eval import compose_evaluate

    overrides = [f"run_dir={tiny_run}", f"cache_dir={tmp_path / 'cache'}", "device=cpu", "batch_size=4",
                 f"toy_clip_dir={toy_clip_dir}", "student_nfe=[1,2]", "teacher_nfe=[1]", "teacher_full=false",
                 "eval.benchmarks=[toy_diversity]", "+eval.options.toy_diversity.num_images=3",
                 "+eval.options.toy_diversity.images_per_prompt=2",
                 f"+eval.options.toy_diversity.toy.shards=[{','.join(toy_shards)}]"]
    assert evaluate(OmegaConf.to_object(compose_evaluate(overrides))) == 0
    for name in ("student_nfe1", "student_nfe2", "teacher_nfe1"):
        r = read_json(result_path(tiny_run, "toy_diversity", name))
        assert r is not None and r["num_images"] == 6
        assert 1.0 - 1e-6 <= r["vendi"] <= 2.0 + 1e-6 and r["lpips_diversity"] is None
        assert r["draws"][0]["vendi"] == r["vendi"] and r["vendi_std"] is None
        protocol = r["spec"]["protocol"]
        assert protocol["images_per_prompt"]["count"] == 2 and "diversity" in protocol["metrics"]
    assert len(set(image_noise_seeds(0, 0, range(6)))) == 6
    draw = sorted((images_dir(tiny_run, "toy_diversity", "student_nfe1") / "draw0").glob("*.png"))
    assert len(draw) == 6  # 3 prompts x 2 images; a prompt's two images come from other noise
    assert not np.array_equal(np.asarray(Image.open(draw[0])), np.asarray(Image.open(draw[1])))


# ------------------------------------------------------------------------------------ directions
def test_every_score_has_a_direction_and_the_leaderboard_shows_it(tmp_path):
    assert [arrow(k) for k in ("fid", "kid", "cmmd", "fd_dinov2")] == ["↓"] * 4
    assert [arrow(k) for k in ("clip_score", "recall", "vendi", "lpips_diversity")] == ["↑"] * 4
    from flash_exp.leaderboard.cells import row_cells, table_columns
    from flash_exp.leaderboard.tables import build_tables
    from flash_exp.metrics.results import iter_results
    from tests.fixtures_results import write_result

    runs = tmp_path / "runs"
    write_result(runs / "teacher", "teacher", 4, 30.0, cmmd=0.7, fd_dinov2=400.0)
    (table,) = build_tables(iter_results(runs), runs)
    columns = table_columns(table)
    assert "CMMD ↓" in columns and "FD-DINOv2 ↓" in columns and "Vendi ↑" not in columns
    from flash_exp.leaderboard.cells import optional_columns

    cells = row_cells(table.rows[0], optional=optional_columns(table))
    assert cells[columns.index("CMMD ↓")] == "0.7000" and cells[columns.index("FD-DINOv2 ↓")] == "400.0000"


def test_prefetch_lists_the_weights_of_the_modern_metrics():
    from flash_exp.config import compose_train_config
    from flash_exp.prefetch.listing import plan

    items, coco = plan(compose_train_config(["backbone=sd15", "eval=modern"]))
    listed = [(i.what, i.name) for i in items]
    assert ("cmmd", "openai/clip-vit-large-patch14-336") in listed
    assert ("fd_dinov2", "facebook/dinov2-large") in listed
    assert ("diversity (torchvision)", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth") in listed
    assert coco == ["coco2017_5k_modern", "coco2014_30k", "coco2017_diversity"]
    cmmd = next(i for i in items if i.what == "cmmd")
    assert cmmd.env(Path("/c"), Path("/c/huggingface/hub/x")) == {"FLASH_EXP_CMMD_WEIGHTS": "$FLASH_EXP_CACHE/huggingface/hub/x"}
    toy, _ = plan(compose_train_config(["backbone=sd15"]))
    assert not any("torchvision)" in i.what or i.what in ("cmmd", "fd_dinov2") for i in toy)
