"""The toy-world build: data shards, VAE, teacher pipeline and toy CLIP, from one seed.

Stages, in order (each reads what the earlier ones wrote under ``out``):

* ``data``: train and held-out shards in ``data/``;
* ``vae``: the autoencoder, in ``teacher/vae/``;
* ``teacher``: UNet + text encoder + tokenizer, saved with the VAE as a pipeline in ``teacher/``;
* ``clip``: the toy CLIP in ``clip/``.

``toyworld.json`` records the seed, split sizes, image and latent sizes, VAE scaling factor and
the teacher's sampling budget.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from flash_exp.config import toy_paths
from flash_exp.data.shard_writer import write_shards
from flash_exp.toyworld.clip import train_toy_clip
from flash_exp.toyworld.dataset import load_shards
from flash_exp.toyworld.shapes import IMAGE_SIZE, caption_words, iter_samples
from flash_exp.toyworld.teacher import (
    LATENT_CHANNELS,
    LATENT_SIZE,
    SamplingBudget,
    build_tokenizer,
    save_teacher,
    train_denoiser,
    train_vae,
)

WORLD_STAGES = ("data", "vae", "teacher", "clip")
SHARD_SIZE = 4000


@dataclass(frozen=True)
class BuildSettings:
    """Split sizes (in images) and optimisation step counts of one build."""

    train_count: int
    heldout_count: int
    vae_steps: int
    teacher_steps: int
    clip_steps: int


FULL_WORLD = BuildSettings(train_count=16_000, heldout_count=1000, vae_steps=800, teacher_steps=1500, clip_steps=1200)
QUICK_WORLD = BuildSettings(train_count=256, heldout_count=64, vae_steps=4, teacher_steps=4, clip_steps=4)


def _update_info(out: Path, entries: dict) -> None:
    """Merge ``entries`` into ``out/toyworld.json``."""
    path = out / toy_paths.TOYWORLD_RECORD
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(entries)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def build_data(out: Path, settings: BuildSettings, seed: int) -> dict:
    """Write ``train-*.tar.gz`` and ``heldout-*.tar.gz`` under ``out/data``; returns its build record."""
    for split, count in (("train", settings.train_count), ("heldout", settings.heldout_count)):
        for old in (out / "data").glob(f"{split}-*{toy_paths.SHARD_SUFFIX}"):
            old.unlink()
        write_shards(iter_samples(seed, split, count), str(out / "data" / f"{split}-%06d{toy_paths.SHARD_SUFFIX}"),
                     SHARD_SIZE)
    return {"seed": seed, "image_size": IMAGE_SIZE,
            "splits": {"train": settings.train_count, "heldout": settings.heldout_count}}


def build_vae(out: Path, settings: BuildSettings, seed: int) -> dict:
    """Train the VAE on the train shards and save it to ``out/teacher/vae``; returns its build record."""
    vae = train_vae(load_shards(toy_paths.train_shards(out)), settings.vae_steps, seed=seed)
    vae.save_pretrained(out / "teacher" / "vae", safe_serialization=True)
    return {"latent_shape": [LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE],
            "vae_scaling_factor": vae.config.scaling_factor}


def build_teacher(out: Path, settings: BuildSettings, seed: int) -> dict:
    """Train UNet + text encoder on the train shards and save the whole pipeline to ``out/teacher``;
    returns its build record."""
    vae = AutoencoderKL.from_pretrained(out / "teacher" / "vae")
    tokenizer = build_tokenizer(caption_words())
    data = load_shards(toy_paths.train_shards(out))
    unet, text_encoder = train_denoiser(vae, tokenizer, data, settings.teacher_steps, seed=seed)
    budget = SamplingBudget()
    save_teacher(out / "teacher", vae, unet, text_encoder, tokenizer, budget)
    return {"teacher_sampling": budget.to_dict()}


def build_clip(out: Path, settings: BuildSettings, seed: int) -> dict:
    """Train the toy CLIP on the train shards and save it to ``out/clip``; returns its build record."""
    train_toy_clip(load_shards(toy_paths.train_shards(out)), out / "clip", settings.clip_steps, seed=seed,
                   progress_position=1)
    return {"clip_model": toy_paths.CLIP_MODEL_NAME}


BUILDERS = {"data": build_data, "vae": build_vae, "teacher": build_teacher, "clip": build_clip}


def _run_stage(stage: str, out: Path, settings: BuildSettings, seed: int, threads: int) -> dict:
    """Run one stage with ``threads`` torch threads; returns its build record."""
    torch.set_num_threads(threads)
    start = time.perf_counter()
    record = BUILDERS[stage](out, settings, seed)
    print(f"[toyworld] {stage}: {time.perf_counter() - start:.1f} s", flush=True)
    return record


def build(stages: list[str], out: Path, settings: BuildSettings, seed: int, threads: int) -> None:
    """Run ``stages`` in dependency order. The CLIP only needs the data, so it trains in a second
    process while the VAE and the teacher train in this one (two cores are used without the
    slowdown that intra-op threads suffer on a busy machine). Each stage's record is merged into
    ``toyworld.json`` by this process."""
    out.mkdir(parents=True, exist_ok=True)
    if "data" in stages:
        _update_info(out, _run_stage("data", out, settings, seed, threads))
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        clip = pool.submit(_run_stage, "clip", out, settings, seed, threads) if "clip" in stages else None
        for stage in ("vae", "teacher"):
            if stage in stages:
                _update_info(out, _run_stage(stage, out, settings, seed, threads))
        if clip is not None:
            _update_info(out, clip.result())
