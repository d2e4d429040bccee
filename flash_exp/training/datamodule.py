"""The LightningDataModule around :class:`~flash_exp.data.webdataset.CaptionedImageStream` (image shards),
:class:`~flash_exp.data.folder.FolderImageStream` (a folder, ``data=folder``) or
:class:`~flash_exp.data.cached_latents_stream.CachedLatentStream` (latent-cache shards, ``data.cached=true``)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from flash_exp.config import TrainConfig
from flash_exp.data.cached_latents_stream import CachedLatentStream
from flash_exp.data.folder import FolderImageStream
from flash_exp.data.webdataset import CaptionedImageStream
from flash_exp.tasks import build_sample_transform


class RepeatedBatches(IterableDataset):
    """The first ``count`` batches of ``stream``, repeated for ever (``data.overfit_batches``)."""

    def __init__(self, stream: IterableDataset, count: int):
        self.stream, self.count = stream, count

    def __iter__(self) -> Iterator[dict]:
        batches = list(itertools.islice(iter(self.stream), self.count))
        for batch in itertools.cycle(batches):
            yield dict(batch)  # a fresh dict: the step may add keys to the batch it gets


class FlashDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg

    def stream(self, rank: int = 0, world_size: int = 1) -> CaptionedImageStream:
        """The training stream of ``data`` for one rank."""
        d, b = self.cfg.data, self.cfg.backbone
        common = dict(batch_size=d.batch_size, seed=self.cfg.seed, shuffle_buffer=d.shuffle_buffer,
                      min_aesthetic_score=d.min_aesthetic_score, resampled=d.resampled, rank=rank,
                      world_size=world_size, max_consecutive_rejects=d.max_consecutive_rejects,
                      allow_command_urls=d.allow_command_urls)
        if d.cached:
            return CachedLatentStream(list(d.shards), {"family": b.family, "resolution": b.resolution}, **common)
        # the task's per-sample inputs (masks, low-res images, edge maps, references)
        common.update(image_keys=d.image_key, caption_key=d.caption_key, crop_size=d.crop_size,
                      transform=build_sample_transform(self.cfg.task, b.resolution))
        if d.kind == "folder":
            return FolderImageStream(d.root, b.resolution, files_per_shard=d.files_per_shard, **common)
        return CaptionedImageStream(shards=list(d.shards), resolution=b.resolution, **common)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        stream = self.stream(trainer.global_rank if trainer else 0, trainer.world_size if trainer else 1)
        if self.cfg.data.overfit_batches:  # the same batches on every attempt: nothing to skip on resume
            return DataLoader(RepeatedBatches(stream, self.cfg.data.overfit_batches), batch_size=None)
        # on resume the restored step says how many batches this stream already delivered
        stream.start_batch = trainer.global_step if trainer else 0
        return DataLoader(stream, batch_size=None, num_workers=self.cfg.data.num_workers,
                          persistent_workers=self.cfg.data.num_workers > 0)
