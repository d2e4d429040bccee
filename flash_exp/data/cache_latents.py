"""``python -m flash_exp.data.cache_latents``: encode the training shards once, so training reads latents.

    python -m flash_exp.data.cache_latents --out /data/sdxl-cache backbone=sdxl \\
        backbone.pretrained=/models/sdxl-base 'data.shards=[/data/laion/00000.tar,/data/laion/00001.tar]'
    python -m flash_exp.train backbone=sdxl backbone.pretrained=/models/sdxl-base trainer=gpu24 \\
        'data.shards=[/data/sdxl-cache/cache-000000.tar]' data.cached=true

The arguments after the options are overrides of the training config (those of
``python -m flash_exp.train``): the shards are read once, in order, through the training pipeline
(same filters, crop and resolution), and each usable sample is written to ``<out>/cache-NNNNNN.tar``
as ``pth`` (a dict: ``latents`` (C, h, w) float32 and ``condition``, the denoiser's condition kwargs of
that sample) and ``json`` (caption, aesthetic score, and ``encoded_by``: family, resolution, weights,
dtype; a training run with another family or resolution refuses the cache).

Latents are the VAE posterior's mean (the mode of its diagonal Gaussian), which is what
:meth:`~flash_exp.backbones.base.Backbone.encode_images` returns during training without a cache, so a
cached run sees the same latents; no posterior sample is drawn. Text embeddings come from the
backbone's own ``encode_prompts`` at ``backbone.dtype``, without autocast. Only the VAE encoder and
the text encoders are moved to ``--device``.
"""

from __future__ import annotations

import argparse
import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from flash_exp.backbones.base import Backbone
from flash_exp.config import ConfigError, TrainConfig, compose_train_config
from flash_exp.data.cached_latents_stream import pack_cached
from flash_exp.data.folder import FolderImageStream
from flash_exp.data.shard_writer import write_shards
from flash_exp.data.webdataset import CaptionedImageStream

log = logging.getLogger("flash_exp.data.cache_latents")


def source_stream(cfg: TrainConfig) -> CaptionedImageStream:
    """The image shards (or folder, ``data=folder``) of ``data`` with the training filters, crop and resolution."""
    d = cfg.data
    common = dict(min_aesthetic_score=d.min_aesthetic_score, image_keys=d.image_key, caption_key=d.caption_key,
                  crop_size=d.crop_size)
    if d.kind == "folder":
        return FolderImageStream(d.root, cfg.backbone.resolution, d.batch_size,
                                 files_per_shard=d.files_per_shard, **common)
    return CaptionedImageStream(list(d.shards), cfg.backbone.resolution, d.batch_size,
                                allow_command_urls=d.allow_command_urls, **common)


def _one_sample(value: Any, i: int) -> Any:
    """Row ``i`` of every tensor in ``value`` (nested dicts too), copied to its own CPU storage."""
    if isinstance(value, dict):
        return {k: _one_sample(v, i) for k, v in value.items()}
    return value[i].detach().cpu().clone()


def _chunks(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def cached_samples(backbone: Backbone, items: Iterable[dict], batch_size: int) -> Iterator[dict]:
    """Webdataset samples {__key__, pth, json} for decoded items {key, pixels, caption, aesthetic_score}."""
    cfg = backbone.cfg
    encoded_by = {"family": cfg.family, "resolution": cfg.resolution, "pretrained": cfg.pretrained,
                  "dtype": cfg.dtype}
    for chunk in _chunks(items, batch_size):
        latents = backbone.encode_images(torch.stack([c["pixels"] for c in chunk]))
        cond = backbone.encode_prompts([c["caption"] for c in chunk])
        if cond.concat is not None:
            raise ValueError("only text conditioning can be cached; this condition has extra channels")
        for i, item in enumerate(chunk):
            yield {
                "__key__": item["key"],
                "pth": pack_cached(_one_sample(latents, i), _one_sample(cond.kwargs, i)),
                "json": {"caption": item["caption"], "aesthetic_score": item["aesthetic_score"],
                         "encoded_by": encoded_by},
            }


def write_cache(cfg: TrainConfig, out: Path, device: torch.device, batch_size: int = 8,
                shard_size: int = 1000) -> list[Path]:
    """Encode every usable sample of ``cfg.data.shards`` into ``out/cache-NNNNNN.tar``; returns the shards."""
    from flash_exp.backbones import build_backbone

    if cfg.data.cached:
        raise ValueError("data.cached=true: the cache is written from image shards, not from a cache")
    backbone = build_backbone(cfg.backbone).eval()
    for module in backbone.frozen_modules():
        module.to(device)
    stream = source_stream(cfg)
    with torch.no_grad():
        shards = write_shards(cached_samples(backbone, stream.one_pass(), batch_size),
                              str(out / "cache-%06d.tar"), shard_size)
    log.info("cached %s: %d shards, %d samples skipped, %d filtered", out, len(shards),
             stream.counters.skipped, stream.counters.filtered)
    return shards


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("--out", type=Path, required=True, help="directory of the cache shards")
    parser.add_argument("--batch-size", type=int, default=8, help="images encoded per call")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per cache shard")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("overrides", nargs="*", help="overrides of the training config")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    try:
        cfg = compose_train_config(args.overrides)
    except ConfigError as err:
        parser.exit(2, f"error: {err}\n")
    shards = write_cache(cfg, args.out, device, args.batch_size, args.shard_size)
    listing = ",".join(str(s) for s in shards)
    print(f"train on the cache with: 'data.shards=[{listing}]' data.cached=true")
    return shards


if __name__ == "__main__":
    main()
