"""The LightningDataModule around :class:`~flash_exp.data.webdataset.CaptionedImageStream`."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from flash_exp.config import TrainConfig
from flash_exp.data.webdataset import CaptionedImageStream


class FlashDataModule(L.LightningDataModule):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg

    def train_dataloader(self) -> DataLoader:
        d = self.cfg.data
        trainer = self.trainer
        stream = CaptionedImageStream(
            shards=list(d.shards),
            resolution=self.cfg.backbone.resolution,
            batch_size=d.batch_size,
            seed=self.cfg.seed,
            shuffle_buffer=d.shuffle_buffer,
            min_aesthetic_score=d.min_aesthetic_score,
            image_keys=d.image_key,
            caption_key=d.caption_key,
            crop_size=d.crop_size,
            resampled=d.resampled,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        # on resume the restored step says how many batches this stream already delivered
        stream.start_batch = trainer.global_step if trainer else 0
        return DataLoader(stream, batch_size=None, num_workers=d.num_workers,
                          persistent_workers=d.num_workers > 0)
