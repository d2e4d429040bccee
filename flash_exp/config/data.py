"""The ``data`` group: webdataset shards or a folder of images and captions, and the stream's limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from flash_exp.config.errors import ConfigError, one_of, positive, refuse_command_urls

DATA_KINDS = ("webdataset", "folder")


@dataclass
class DataConfig:
    shards: list[str] = MISSING  # brace-expandable webdataset urls or local tar paths
    kind: str = "webdataset"  # "webdataset": data.shards; "folder": images and captions under data.root
    root: str | None = None  # data=folder: the directory (README "Your own data")
    files_per_shard: int = 1000  # data=folder: files read as one shard (make_shards --shard-size)
    batch_size: int = 4  # per device
    num_workers: int = 0
    shuffle_buffer: int = 1000
    resampled: bool = False  # sample shards with replacement (multi-node)
    min_aesthetic_score: float | None = 6.0
    image_key: str = "jpg;png;jpeg;webp"
    caption_key: str = "caption"
    crop_size: int | None = None  # centre crop before resize; default: the shorter side
    prompts: list[str] = field(default_factory=list)  # fixed prompts of the sample grids
    cached: bool = False  # shards hold latents and text embeddings (python -m flash_exp.data.cache_latents)
    max_consecutive_rejects: int = 10_000  # stop the stream after this many rejected samples in a row
    # true: shard URLs "pipe:CMD" run CMD in a shell (webdataset's pipe: scheme); false refuses them
    allow_command_urls: bool = False
    overfit_batches: int = 0  # > 0: train on the stream's first N batches, repeated (debug=overfit)

    def __post_init__(self) -> None:
        one_of("data.kind", self.kind, DATA_KINDS)
        if self.batch_size <= 0:
            raise ConfigError("data.batch_size", self.batch_size, "must be a positive integer")
        if self.overfit_batches < 0:
            raise ConfigError("data.overfit_batches", self.overfit_batches, "must be >= 0 (0: no repetition)")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers", self.num_workers, "must be >= 0")
        if self.kind == "folder":
            self._check_folder()
        elif not self.shards:
            raise ConfigError("data.shards", list(self.shards), "name at least one webdataset shard (path, brace "
                                                                "pattern or URL)")
        self._check_stream()

    def _check_folder(self) -> None:
        from pathlib import Path

        if not self.root:
            raise ConfigError("data.root", self.root, "data=folder needs data.root=DIR, a directory of images "
                              "and captions (README \"Your own data\")")
        if not Path(self.root).expanduser().is_dir():
            raise ConfigError("data.root", self.root, "is not a directory")
        if self.cached:
            raise ConfigError("data.cached", True, "reads latent-cache shards, not a folder: cache the folder "
                              "with python -m flash_exp.data.cache_latents data=folder data.root=DIR, then "
                              "train on the shards it prints with data.cached=true, without data=folder")
        positive("data.files_per_shard", self.files_per_shard)

    def _check_stream(self) -> None:
        if self.crop_size is not None and self.crop_size <= 0:
            raise ConfigError("data.crop_size", self.crop_size, "must be a positive number of pixels, or null")
        if self.max_consecutive_rejects <= 0:
            raise ConfigError("data.max_consecutive_rejects", self.max_consecutive_rejects,
                              "must be a positive integer")
        refuse_command_urls("data.shards", self.shards, self.allow_command_urls)
