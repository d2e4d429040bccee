"""Rebuild the toy world deterministically from a seed.

``python -m flash_exp.toyworld [--out DIR] [--seed 0] [--only data,vae,teacher,clip] [--quick] [--threads 1]``

Stages, in order (each reads what the earlier ones wrote under ``--out``):

* ``data``: train and held-out shards in ``data/``;
* ``vae``: the autoencoder, in ``teacher/vae/``;
* ``teacher``: UNet + text encoder + tokenizer, saved with the VAE as a pipeline in ``teacher/``;
* ``clip``: the toy CLIP in ``clip/``.

``toyworld.json`` records the seed, split sizes, sizes, VAE scaling factor and the teacher's
sampling budget. ``--quick`` uses tiny sizes and step counts (for tests).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from flash_exp.data.shard_writer import write_shards
from flash_exp.toyworld import assets
from flash_exp.toyworld.clip import MODEL_NAME, train_toy_clip
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

STAGES = ("data", "vae", "teacher", "clip")
SHARD_SIZE = 4000


@dataclass(frozen=True)
class BuildSettings:
    """Sizes and step counts of one build; all batch sizes are in images."""

    train_count: int
    heldout_count: int
    vae_steps: int
    teacher_steps: int
    clip_steps: int


FULL = BuildSettings(train_count=16_000, heldout_count=1000, vae_steps=800, teacher_steps=1500, clip_steps=1200)
QUICK = BuildSettings(train_count=256, heldout_count=64, vae_steps=4, teacher_steps=4, clip_steps=4)


def _update_info(out: Path, **entries: object) -> None:
    path = out / assets.INFO_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    record.update(entries)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def build_data(out: Path, settings: BuildSettings, seed: int) -> None:
    """Write ``train-*.tar.gz`` and ``heldout-*.tar.gz`` under ``out/data``."""
    for split, count in (("train", settings.train_count), ("heldout", settings.heldout_count)):
        for old in (out / "data").glob(f"{split}-*{assets.SHARD_SUFFIX}"):
            old.unlink()
        write_shards(iter_samples(seed, split, count), str(out / "data" / f"{split}-%06d{assets.SHARD_SUFFIX}"),
                     SHARD_SIZE)
    _update_info(out, seed=seed, image_size=IMAGE_SIZE,
                 splits={"train": settings.train_count, "heldout": settings.heldout_count})


def build_vae(out: Path, settings: BuildSettings, seed: int) -> None:
    """Train the VAE on the train shards and save it to ``out/teacher/vae``."""
    vae = train_vae(load_shards(assets.train_shards(out)), settings.vae_steps, seed=seed)
    vae.save_pretrained(out / "teacher" / "vae", safe_serialization=True)
    _update_info(out, latent_shape=[LATENT_CHANNELS, LATENT_SIZE, LATENT_SIZE],
                 vae_scaling_factor=vae.config.scaling_factor)


def build_teacher(out: Path, settings: BuildSettings, seed: int) -> None:
    """Train UNet + text encoder on the train shards and save the whole pipeline to ``out/teacher``."""
    vae = AutoencoderKL.from_pretrained(out / "teacher" / "vae")
    tokenizer = build_tokenizer(caption_words())
    data = load_shards(assets.train_shards(out))
    unet, text_encoder = train_denoiser(vae, tokenizer, data, settings.teacher_steps, seed=seed)
    budget = SamplingBudget()
    save_teacher(out / "teacher", vae, unet, text_encoder, tokenizer, budget)
    _update_info(out, teacher_sampling=budget.to_dict())


def build_clip(out: Path, settings: BuildSettings, seed: int) -> None:
    """Train the toy CLIP on the train shards and save it to ``out/clip``."""
    train_toy_clip(load_shards(assets.train_shards(out)), out / "clip", settings.clip_steps, seed=seed)
    _update_info(out, clip_model=MODEL_NAME)


BUILDERS = {"data": build_data, "vae": build_vae, "teacher": build_teacher, "clip": build_clip}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=assets.ASSETS, help="output directory (default: shipped assets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and step counts (tests)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: these models are too small to gain from more, "
                             "and a fixed count keeps the floating-point results reproducible)")
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    settings = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    total = time.perf_counter()
    for stage in STAGES:
        if stage in stages:
            start = time.perf_counter()
            BUILDERS[stage](args.out, settings, args.seed)
            print(f"[toyworld] {stage}: {time.perf_counter() - start:.1f} s")
    print(f"[toyworld] done in {time.perf_counter() - total:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
