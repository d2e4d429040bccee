"""The toy world: shapes data, shard writer, tokenizer, shipped teacher and toy CLIP, the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import webdataset as wds
from diffusers import StableDiffusionPipeline
from PIL import Image
from transformers import CLIPTokenizer

from flash_exp.config import toy_paths
from flash_exp.data.shard_writer import write_shards
from flash_exp.metrics.toy_clip import load_toy_clip, register
from flash_exp.toyworld.clip import TOY_CLIP_CONFIG
from flash_exp.toyworld.quality import CLIP_THRESHOLD, TEACHER_THRESHOLD, measure
from flash_exp.toyworld.shapes import (
    BACKGROUNDS,
    COLOURS,
    IMAGE_SIZE,
    SHAPES,
    all_captions,
    caption_words,
    iter_samples,
    make_caption,
    make_sample,
    parse_caption,
    render,
    sample_spec,
)
from flash_exp.toyworld.teacher import MAX_TOKENS, build_tokenizer

EMBED_DIM = TOY_CLIP_CONFIG["embed_dim"]


def test_samples_are_deterministic_in_the_seed() -> None:
    first = [make_sample(0, "train", i) for i in range(20)]
    again = [make_sample(0, "train", i) for i in range(20)]
    other = [make_sample(1, "train", i) for i in range(20)]
    assert [s["jpg"] for s in first] == [s["jpg"] for s in again]
    assert [s["json"] for s in first] == [s["json"] for s in again]
    assert sum(a["jpg"] != b["jpg"] for a, b in zip(first, other, strict=True)) == 20
    assert [s["json"]["caption"] for s in first] != [s["json"]["caption"] for s in other]
    assert make_sample(0, "heldout", 0)["jpg"] != first[0]["jpg"]


def test_render_is_a_32px_rgb_image_with_both_colours() -> None:
    spec = sample_spec(0, "train", 3)
    pixels = np.asarray(render(spec))
    assert pixels.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and pixels.dtype == np.uint8
    colours = {tuple(int(v) for v in p) for p in pixels.reshape(-1, 3)}
    assert spec.fill_rgb in colours and spec.background_rgb in colours


def test_captions_round_trip_through_the_parser() -> None:
    captions = all_captions()
    assert len(captions) == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS) == len(set(captions))
    for caption in captions:
        colour, shape, background = parse_caption(caption)
        assert make_caption(colour, shape, background) == caption
    assert make_caption("red", "circle", "teal") == "a red circle on a teal background"
    assert make_caption("orange", "star", "white") == "an orange star on a white background"
    with pytest.raises(ValueError):
        parse_caption("a red zebra on a teal background")
    with pytest.raises(ValueError):
        parse_caption("red circle")


def _read(shards: list[str]) -> list[tuple[Image.Image, dict]]:
    return list(wds.WebDataset(shards, shardshuffle=False).decode("pil").to_tuple("jpg", "json"))


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_write_shards_is_readable_and_reproducible(tmp_path: Path, suffix: str) -> None:
    paths = write_shards(iter_samples(0, "train", 50), str(tmp_path / "a" / f"s-%03d{suffix}"), maxcount=20)
    again = write_shards(iter_samples(0, "train", 50), str(tmp_path / "b" / f"s-%03d{suffix}"), maxcount=20)
    assert [p.name for p in paths] == [f"s-000{suffix}", f"s-001{suffix}", f"s-002{suffix}"]
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]
    samples = _read([str(p) for p in paths])
    assert len(samples) == 50
    image, meta = samples[7]
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE) and image.mode == "RGB"
    assert meta == make_sample(0, "train", 7)["json"]


def test_write_shards_encodes_pil_images(tmp_path: Path) -> None:
    image = Image.new("RGB", (8, 8), (255, 0, 0))
    paths = write_shards([{"__key__": "k0", "jpg": image, "json": {"caption": "x"}}], str(tmp_path / "p-%02d.tar"), 5)
    [(decoded, meta)] = _read([str(p) for p in paths])
    assert decoded.size == (8, 8) and meta == {"caption": "x"}
    assert np.abs(np.asarray(decoded).astype(int) - [255, 0, 0]).max() <= 3


def test_shipped_shards_have_captions_and_spread_scores() -> None:
    samples = _read(toy_paths.train_shards()[:1])
    assert len(samples) >= 1000
    scores = np.array([meta["aesthetic_score"] for _, meta in samples])
    for image, meta in samples[:50]:
        assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
        parse_caption(meta["caption"])
    assert 0.5 < scores.std() < 2.0
    assert 0.6 < (scores >= 5.0).mean() < 0.95
    assert len(_read(toy_paths.heldout_shards())) == toy_paths.toyworld_info()["splits"]["heldout"]


def test_tokenizer_has_one_token_per_caption_word_and_reloads(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(caption_words())
    for word in caption_words():
        assert len(tokenizer.tokenize(word)) == 1, word
    caption = "an orange star on a white background"
    ids = tokenizer(caption).input_ids
    assert len(ids) == 2 + len(caption.split())
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer("").input_ids == [tokenizer.bos_token_id, tokenizer.eos_token_id]
    assert len(tokenizer.tokenize("zebra")) > 1  # unknown words fall back to pieces
    tokenizer.save_pretrained(tmp_path)
    reloaded = CLIPTokenizer.from_pretrained(tmp_path)
    assert reloaded.model_max_length == MAX_TOKENS
    padded = reloaded([caption, ""], padding="max_length", max_length=MAX_TOKENS).input_ids
    assert padded[0][: len(ids)] == ids and len(padded[1]) == MAX_TOKENS


def test_shipped_teacher_loads_and_generates_32px_images() -> None:
    pipe = StableDiffusionPipeline.from_pretrained(toy_paths.teacher_dir())
    pipe.set_progress_bar_config(disable=True)
    info = toy_paths.toyworld_info()
    assert type(pipe.scheduler).__name__ == info["teacher_sampling"]["scheduler"]
    assert pipe.vae.config.scaling_factor == pytest.approx(info["vae_scaling_factor"])
    assert pipe.unet.config.sample_size == info["latent_shape"][1] == 16
    out = pipe(["a red circle on a white background", ""], num_inference_steps=2, guidance_scale=3.0,
               output_type="np", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert np.isfinite(out.images).all() and 0.0 <= out.images.min() and out.images.max() <= 1.0


def test_shipped_toy_clip_loads_and_embeds() -> None:
    model, preprocess, tokenizer = load_toy_clip()
    images = [Image.new("RGB", (32, 32), (200, 30, 30)), Image.new("RGB", (64, 48), (30, 30, 200))]
    pixels = torch.stack([preprocess(image) for image in images])
    assert pixels.shape == (2, 3, 32, 32)
    with torch.no_grad():
        image_features = model.encode_image(pixels, normalize=True)
        text_features = model.encode_text(tokenizer(all_captions()[:5]), normalize=True)
    assert image_features.shape == (2, EMBED_DIM) and text_features.shape == (5, EMBED_DIM)
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(2), atol=1e-5)
    register(toy_paths.clip_dir() / toy_paths.CLIP_CONFIG_FILE)
    same, _, _ = open_clip.create_model_and_transforms(toy_paths.CLIP_MODEL_NAME, pretrained=str(toy_paths.clip_weights()))
    with torch.no_grad():
        assert torch.allclose(same.eval().encode_image(pixels, normalize=True), image_features, atol=1e-6)


def test_missing_assets_name_the_build_command(tmp_path: Path) -> None:
    for accessor in (toy_paths.teacher_dir, toy_paths.clip_weights, toy_paths.train_shards, toy_paths.toyworld_info):
        with pytest.raises(FileNotFoundError, match="make toyworld"):
            accessor(tmp_path)


@pytest.mark.slow
def test_quick_build_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    subprocess.run([sys.executable, "-m", "flash_exp.toyworld", "--quick", "--out", str(out)], check=True,
                   timeout=240)
    info = toy_paths.toyworld_info(out)
    assert info["seed"] == 0 and info["splits"] == {"train": 256, "heldout": 64}
    assert info["latent_shape"] == [4, 16, 16] and info["vae_scaling_factor"] > 0
    assert len(_read(toy_paths.train_shards(out))) == 256
    pipe = StableDiffusionPipeline.from_pretrained(toy_paths.teacher_dir(out))
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a blue square on a gray background", num_inference_steps=1, output_type="pil").images[0]
    assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    model, preprocess, _ = load_toy_clip(toy_paths.clip_dir(out))
    with torch.no_grad():
        assert model.encode_image(preprocess(image)[None]).shape == (1, EMBED_DIM)


@pytest.mark.slow
def test_shipped_assets_meet_the_quality_thresholds() -> None:
    report = measure(clip_count=500, teacher_count=100, progress=lambda _: None)
    assert report.clip_accuracy >= CLIP_THRESHOLD
    assert report.teacher_accuracy >= TEACHER_THRESHOLD
