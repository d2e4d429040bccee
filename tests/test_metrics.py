"""FID (clean-fid), CLIP score (open_clip), the crop-and-resize policy, hashes and eval specs."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from flash_exp.metrics.clip_score import (
    PHOTO_PREFIX,
    clip_scores,
    open_clip_model,
    tag_settings,
    toy_clip_model,
)
from flash_exp.metrics.features import FeatureExtractor, clip_image_extractor, load_inception
from flash_exp.metrics.fid import fid_from_features, image_features, reference_features
from flash_exp.metrics.hashing import file_sha256, prompt_set_hash
from flash_exp.metrics.images import CenterCropResize
from flash_exp.metrics.spec import (
    SamplerSetting,
    eval_spec,
    protocol_hash,
    protocol_spec,
    sampler_spec,
    spec_hash,
)
from tests.fixtures_eval import TINY_CLIP, TinyFeatures, random_images

pytest_plugins = ["tests.fixtures_eval"]


def tiny_extractor(dim: int = 8, input_size: int = 32) -> FeatureExtractor:
    return FeatureExtractor("tiny", TinyFeatures(dim).eval(), input_size, "0" * 64, torch.device("cpu"))


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Independent reference: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(root))


# ------------------------------------------------------------------------------------------ resize
def test_center_crop_resize_crops_the_long_edge_then_resizes():
    image = np.zeros((20, 40, 3), dtype=np.uint8)  # H=20, W=40: 10 px cropped on each side
    image[:, :10] = 255
    image[:, 30:] = 255
    out = CenterCropResize(10)(image)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out.max() == 0  # the white side bands were cropped away
    same = CenterCropResize(20)(image)
    assert same.shape == (20, 20, 3) and same.max() == 0


# ------------------------------------------------------------------------------------------ FID
def test_fid_of_an_image_set_against_itself_is_zero(tmp_path):
    files = random_images(tmp_path / "set", 40, sizes=((48, 32), (32, 32)))
    feats = image_features(files, tiny_extractor(), eval_res=32)
    assert feats.shape == (40, 8)
    assert abs(fid_from_features(feats, feats)) <= 1e-6


def test_fid_equals_an_independent_scipy_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 24))
    b = rng.normal(loc=0.3, scale=1.2, size=(250, 24)) @ rng.normal(size=(24, 24)) * 0.5
    expected = scipy_frechet(a, b)
    assert expected > 1.0
    assert abs(fid_from_features(a, b) - expected) / expected <= 1e-6


def test_reference_features_and_statistics_are_cached_and_keyed(tmp_path):
    files = random_images(tmp_path / "ref", 12)
    extractor = tiny_extractor()
    calls = []
    extractor.module.register_forward_hook(lambda *_: calls.append(1))
    first = reference_features(files, extractor, 32, tmp_path / "cache", {"benchmark": "x"})
    n_calls = len(calls)
    again = reference_features(files, extractor, 32, tmp_path / "cache", {"benchmark": "x"})
    assert len(calls) == n_calls  # read from the cache, no feature pass
    np.testing.assert_array_equal(first.stats.mu, again.stats.mu)
    np.testing.assert_array_equal(first.features, again.features)
    assert first.features.shape[0] == 12
    reference_features(files, extractor, 16, tmp_path / "cache", {"benchmark": "x"})
    assert len(calls) > n_calls  # another eval_res is another key
    assert len(list((tmp_path / "cache" / "fid_stats").glob("*.npz"))) == 2


def test_inception_file_loads_through_cleanfid_without_download(tiny_inception, tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("download attempted"))
    extractor = load_inception(tiny_inception)
    assert extractor.input_size == 299 and extractor.weights_sha256 == file_sha256(tiny_inception)
    files = random_images(tmp_path / "imgs", 3, sizes=((40, 30),))
    assert image_features(files, extractor, eval_res=32).shape == (3, 2048)


def test_missing_inception_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("download attempted"))
    path = tmp_path / "weights" / "inception-2015-12-05.pt"
    with pytest.raises(FileNotFoundError, match="inception-2015-12-05.pt") as err:
        load_inception(path)
    assert str(path) in str(err.value) and "inception=" in str(err.value)


# ------------------------------------------------------------------------------------------ CLIP
def test_clip_score_is_the_mean_cosine_of_the_local_open_clip_model(tiny_clip_weights, tmp_path):
    files = random_images(tmp_path / "imgs", 5, sizes=((40, 32),))
    prompts = ["a red circle", "a blue dog", "green kite", "a cat", "yellow square"]
    clip = open_clip_model(TINY_CLIP, "test", tiny_clip_weights)
    scores = clip_scores(files, prompts, clip, eval_res=32, batch_size=2)
    with torch.no_grad():
        pixels = torch.stack([clip.preprocess(CenterCropResize(32).pil(Image.open(f))) for f in files])
        image = clip.model.encode_image(pixels)
        text = clip.model.encode_text(clip.tokenizer(prompts))
        expected = torch.nn.functional.cosine_similarity(image, text).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert np.all(np.abs(scores) <= 1.0)
    prefixed = clip_scores(files, prompts, clip, eval_res=32, photo_prefix=True)
    assert not np.allclose(prefixed, scores)  # "A photo depicts " changes the value
    assert PHOTO_PREFIX == "A photo depicts "


def test_loading_from_a_file_keeps_the_preprocessing_and_activation_of_the_tag():
    vitg = tag_settings("ViT-g-14", "laion2b_s12b_b42k")
    assert vitg["image_resize_mode"] == "shortest" and vitg["image_interpolation"] == "bicubic"
    assert vitg["force_quick_gelu"] is False
    assert tag_settings("ViT-B-32", "openai")["force_quick_gelu"] is True
    assert tag_settings(TINY_CLIP, "test") == {"force_quick_gelu": False}


def test_missing_clip_weights_is_a_clear_error(tmp_path):
    path = tmp_path / "CLIP-ViT-g-14-laion2B-s12B-b42K" / "open_clip_pytorch_model.bin"
    with pytest.raises(FileNotFoundError, match="ViT-g-14") as err:
        open_clip_model("ViT-g-14", "laion2b_s12b_b42k", path)
    assert str(path) in str(err.value) and "clip_weights.ViT-g-14" in str(err.value)


def test_clip_image_tower_is_a_fid_feature_extractor(toy_clip_dir, tmp_path):
    clip = toy_clip_model(toy_clip_dir)
    extractor = clip_image_extractor(clip)
    assert extractor.input_size == 32
    files = random_images(tmp_path / "imgs", 20)
    feats = image_features(files, extractor, eval_res=32)
    assert feats.shape == (20, 64)
    assert abs(fid_from_features(feats, feats)) <= 1e-6


def test_toy_clip_prefers_own_captions_over_shuffled_ones():
    from flash_exp.config import toy_paths

    try:
        shards = toy_paths.heldout_shards()
        toy_paths.clip_weights()
    except FileNotFoundError as err:
        pytest.skip(f"toy-world assets are not built (`make toyworld`): {err}")
    import tempfile
    from pathlib import Path

    from flash_exp.metrics.toy import toy_prompt_set

    with tempfile.TemporaryDirectory() as cache:
        prompt_set = toy_prompt_set(200, Path(cache), shards)
        files = prompt_set.reference_files[:200]
        clip = toy_clip_model()
        own = clip_scores(files, prompt_set.prompts, clip, eval_res=32).mean()
        shuffled = list(prompt_set.prompts)
        np.random.default_rng(0).shuffle(shuffled)
        other = clip_scores(files, shuffled, clip, eval_res=32).mean()
    assert own > other, (own, other)


# ------------------------------------------------------------------------------------------ hashes
def test_prompt_set_hash_depends_on_order_and_content():
    base = prompt_set_hash(["a cat", "a dog"])
    assert base == prompt_set_hash(["a cat", "a dog"])
    assert base != prompt_set_hash(["a dog", "a cat"])
    assert base != prompt_set_hash(["a cat", "a dog "])


def test_spec_hash_changes_with_every_field_and_protocol_hash_ignores_the_sampler():
    features = {"name": "inception-2015-12-05", "input_size": 299, "weights_sha256": "a" * 64}
    clip = {"model": "ViT-g-14", "pretrained": "laion2b_s12b_b42k", "weights_sha256": "b" * 64}
    reference = {"count": 5000, "sha256": "c" * 64, "source": "all"}
    args = dict(benchmark="coco2017_5k", prompt_hash="d" * 64, num_images=5000, eval_res=256, seed=0,
                features=features, reference=reference, clip=clip, photo_prefix=False)
    scheduler = {"name": "LCMScheduler", "timestep_spacing": "trailing", "kwargs": {}}
    base = eval_spec(protocol_spec(**args), sampler_spec(SamplerSetting("student", 2, 0.0), scheduler, 512))
    changes = [dict(benchmark="other"), dict(prompt_hash="e" * 64), dict(num_images=4999), dict(eval_res=512),
               dict(seed=1), dict(features={**features, "name": "toy"}), dict(clip={**clip, "model": "ViT-L-14"}),
               dict(photo_prefix=True), dict(reference={**reference, "count": 40504})]
    hashes = {spec_hash(base)}
    for change in changes:
        spec = eval_spec(protocol_spec(**{**args, **change}), base["sampler"])
        hashes.add(spec_hash(spec))
        assert protocol_hash(spec) != protocol_hash(base)
    for setting in (SamplerSetting("student", 4, 0.0), SamplerSetting("teacher", 2, 3.0)):
        spec = eval_spec(base["protocol"], sampler_spec(setting, scheduler, 512))
        hashes.add(spec_hash(spec))
        assert protocol_hash(spec) == protocol_hash(base)
    hashes.add(spec_hash(eval_spec(base["protocol"], sampler_spec(SamplerSetting("student", 2, 0.0), scheduler, 256))))
    assert len(hashes) == len(changes) + 4
