"""The tiny training config shared by the end-to-end training tests (train, export, checkpoints, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flash_exp.config import TrainConfig, validate
from tests.conftest import compose


def tiny_train_cfg(tiny_sd_dir: Path | str, shards: Sequence[str], *overrides: str) -> TrainConfig:
    """Two-step teacher, rank-4 LoRA, 32 px, four one-batch phases on CPU over ``shards``."""
    shard_list = "[" + ",".join(shards) + "]"
    return validate(compose([
        "backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32",
        "backbone.lora.rank=4", "backbone.lora.alpha=4", "backbone.teacher_sampling.steps=2",
        "loss.distill.type=l2", f"data.shards={shard_list}", "data.batch_size=2",
        "data.min_aesthetic_score=null", "data.shuffle_buffer=8",
        "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu",
        "trainer.checkpoint_every=2", "trainer.sample_every=0", "trainer.num_sample_prompts=1",
        "trainer.sample_nfe=[1]", "trainer.optim.lr=1e-3", "trainer.optim.lr_discriminator=1e-3",
        *overrides,
    ]))
