"""The tiny configs shared by the end-to-end training tests (train, export, checkpoints, backbones, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flash_exp.config import TrainConfig, validate
from tests.conftest import compose


def tiny_train_cfg(tiny_sd_dir: Path | str, shards: Sequence[str], *overrides: str) -> TrainConfig:
    """Two-step teacher, rank-4 LoRA, 32 px, four one-batch phases on CPU over ``shards``."""
    return validate(compose(tiny_train_overrides(tiny_sd_dir, shards, *overrides)))


def tiny_train_overrides(tiny_sd_dir: Path | str, shards: Sequence[str], *overrides: str) -> list[str]:
    """The command-line overrides of :func:`tiny_train_cfg`."""
    shard_list = "[" + ",".join(shards) + "]"
    return [
        "backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32",
        "backbone.lora.rank=4", "backbone.lora.alpha=4", "backbone.teacher_sampling.steps=2",
        "loss.distill.type=l2", f"data.shards={shard_list}", "data.batch_size=2",
        "data.min_aesthetic_score=null", "data.shuffle_buffer=8",
        "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu",
        "trainer.checkpoint_every=2", "trainer.sample_every=0", "trainer.num_sample_prompts=1",
        "trainer.sample_nfe=[1]", "trainer.optim.lr=1e-3", "trainer.optim.lr_discriminator=1e-3",
        *overrides,
    ]


# the tiny transformers have 2 blocks; the discriminator heads stay small on 8x8 feature maps
TINY_OVERRIDES = {
    "toy": [],
    "sd15": [],
    "sdxl": [],
    "pixart": ["backbone.discriminator.feature_module=transformer_blocks.1"],
    "sd3": ["backbone.discriminator.feature_module=transformer_blocks.0"],
    "sd35": ["backbone.discriminator.feature_module=transformer_blocks.0"],
    "flux": ["backbone.discriminator.feature_module=transformer_blocks.0"],
}
PROMPTS = ["a red circle", "a blue square"]


def backbone_cfg(name: str, directory: Path, *overrides: str):
    return validate(compose([
        f"backbone={name.removesuffix('_t5')}", f"backbone.pretrained={directory}", "backbone.resolution=32",
        "backbone.lora.rank=4", "backbone.lora.alpha=2", "backbone.discriminator.head=generic", "backbone.discriminator.channels=[16,32]",
        "loss.distill.type=l2", "data.shards=[unused]", *TINY_OVERRIDES[name.removesuffix("_t5")], *overrides,
    ]))


def train_overrides(shards: list[str], *extra: str) -> list[str]:
    return [
        "backbone.teacher_sampling.steps=2", f"data.shards=[{','.join(shards)}]", "data.batch_size=2",
        "data.min_aesthetic_score=null", "data.shuffle_buffer=8", "phases.k=[4,4,4,4]",
        "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu", "trainer.checkpoint_every=100",
        "trainer.sample_every=0", "trainer.num_sample_prompts=2", "trainer.sample_nfe=[1,2,4]",
        "trainer.log_every=1", "trainer.optim.lr=5e-3", "trainer.optim.lr_discriminator=1e-3",
        "data.prompts=[a red circle,a blue square]", *extra,
    ]
