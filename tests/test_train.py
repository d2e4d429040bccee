"""Training end to end on a tiny SD teacher: resume, corrupt samples, export."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from flash_exp.train import train
from tests.conftest import solid_samples, write_shard
from tests.fixtures_train import tiny_train_cfg

pytestmark = pytest.mark.slow


def trainable_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


def test_resume_ends_at_the_same_step_with_the_same_weights(tmp_path, tiny_sd_dir, tiny_shards):
    straight = tmp_path / "straight"
    train(tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=4"), straight)
    resumed = tmp_path / "resumed"
    train(tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=2"), resumed)
    train(tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=4"), resumed)

    a = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any("discriminator" in k for k in a["state_dict"]) and any("lora" in k for k in a["state_dict"])
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=1e-5, atol=1e-6)
    # the weights did move: compare with the first checkpoint
    first = torch.load(resumed / "checkpoints" / "step_000002.ckpt", map_location="cpu", weights_only=False)
    moved = max((first["state_dict"][k] - b["state_dict"][k]).abs().max().item() for k in first["state_dict"])
    assert moved > 0


def test_corrupt_and_captionless_samples_are_skipped_and_counted(tmp_path, tiny_sd_dir):
    good = solid_samples(10)
    bad = [{"key": "corrupt", "jpg": b"\xff\xd8\xff\xe0 this is not a jpeg", "json": {"caption": "a red square"}},
           {"key": "nocaption", "image": solid_samples(1)[0]["image"], "json": {"aesthetic_score": 7.0}}]
    shard = write_shard(tmp_path / "mixed.tar", good[:4] + bad + good[4:])
    run = tmp_path / "run"
    train(tiny_train_cfg(tiny_sd_dir, [str(shard)], "trainer.max_steps=4", "trainer.log_every=1"), run)
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("data/skipped_samples")]
    assert rows, "no data/skipped_samples column logged"
    assert float(rows[-1]["data/skipped_samples"]) == 2.0
    assert trainable_state(run)  # training went on to the end


def test_export_reproduces_the_training_time_student(tmp_path, tiny_sd_dir, tiny_shards):
    from flash_exp.backbones import load_pipeline
    from flash_exp.training.module import FlashModule
    from flash_exp.training.samples import sample_images

    cfg = tiny_train_cfg(tiny_sd_dir, tiny_shards, "trainer.max_steps=2")
    run = tmp_path / "run"
    export_dir = train(cfg, run)
    assert (export_dir / "pytorch_lora_weights.safetensors").is_file()
    assert sorted((run / "samples").glob("*.png")), "no sample grid written"

    module = FlashModule(cfg)
    module.load_state_dict(trainable_state(run), strict=False)
    prompts = ["a red circle", "a blue square"]
    student = sample_images(module.backbone, prompts, True, 4, 0.0, seed=7, resolution=32)

    pipe = load_pipeline(cfg.backbone, export_dir, sampler="student")
    gens = [torch.Generator().manual_seed(7 + i) for i in range(len(prompts))]
    plain = pipe(prompt=prompts, num_inference_steps=4, guidance_scale=0.0, generator=gens,
                 height=32, width=32, output_type="pt").images
    assert (plain - student).abs().max().item() <= 1e-4
    teacher = load_pipeline(cfg.backbone, None, sampler="student")
    base = teacher(prompt=prompts, num_inference_steps=4, guidance_scale=0.0,
                   generator=[torch.Generator().manual_seed(7 + i) for i in range(2)],
                   height=32, width=32, output_type="pt").images
    assert (base - student).abs().max().item() > 1e-3  # the LoRA is applied, not silently dropped
