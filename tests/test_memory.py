"""Memory and speed options of the step on the tiny SD teacher: the gpu24/gpu40/gpu80 presets, gradient
checkpointing, offloading of the frozen encoders, 8-bit AdamW, a compiled teacher, and the latent cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from flash_exp.config import ConfigError, validate
from tests.conftest import compose, solid_samples, write_shard

PROMPTS = ["a red square", "a blue circle"]


def tiny_cfg(tiny_sd_dir: Path, *overrides: str):
    return validate(compose([
        "backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32",
        "backbone.lora.rank=4", "backbone.lora.alpha=4", "backbone.discriminator.head=generic", "backbone.discriminator.channels=[16,32]",
        "loss.distill.type=l2", "data.shards=[unused]", "data.batch_size=2", "data.shuffle_buffer=1",
        "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu", *overrides,
    ]))


def generator_step(distiller, z, cond, null, step: int = 3) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Generator loss at ``step`` (phase 3: every loss on) and the LoRA gradients, from a fixed seed."""
    params = distiller.backbone.trainable_parameters()
    for p in params:
        p.grad = None
    loss, _, _ = distiller.generator_loss(z, cond, null, step, torch.Generator().manual_seed(0))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in params]


# ---------------------------------------------------------------------------------- presets
@pytest.mark.parametrize("backbone", ["sd15", "sdxl", "pixart", "sd3"])
def test_memory_presets_compose_and_validate(backbone):
    paper_batch = {"sd15": 4}.get(backbone, 2)
    typed = {p: validate(compose([f"backbone={backbone}", f"trainer={p}", "backbone.pretrained=/x",
                                  "data.shards=[x]"])) for p in ("gpu24", "gpu40", "gpu80")}
    for cfg in typed.values():
        assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
        assert cfg.trainer.optim.eight_bit is False
    small, mid, large = typed["gpu24"], typed["gpu40"], typed["gpu80"]
    assert small.data.batch_size == 1 and mid.data.batch_size == large.data.batch_size == paper_batch
    for cfg in (small, mid):
        assert cfg.backbone.gradient_checkpointing and cfg.trainer.offload_frozen
        assert cfg.backbone.dtype == "bfloat16"
    assert not large.backbone.gradient_checkpointing and not large.trainer.offload_frozen
    assert large.backbone.dtype == "float32"


def test_command_line_overrides_a_preset():
    cfg = validate(compose(["backbone=sdxl", "trainer=gpu24", "data.batch_size=3", "backbone.dtype=float32",
                            "backbone.pretrained=/x", "data.shards=[x]"]))
    assert cfg.data.batch_size == 3 and cfg.backbone.dtype == "float32" and cfg.trainer.offload_frozen


# ---------------------------------------------------------------------------------- 8-bit AdamW
def test_eight_bit_without_bitsandbytes_fails_validation(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ConfigError) as err:
        validate(compose(["trainer=gpu24", "trainer.optim.eight_bit=true", "backbone.pretrained=/x",
                          "data.shards=[x]"]))
    assert err.value.key == "trainer.optim.eight_bit"
    assert "bitsandbytes" in str(err.value) and "not installed" in str(err.value)


def test_eight_bit_optimiser_construction_names_the_key(monkeypatch):
    from flash_exp.training.module import adamw_class

    assert adamw_class(False) is torch.optim.AdamW
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"trainer\.optim\.eight_bit.*bitsandbytes"):
        adamw_class(True)


# ---------------------------------------------------------------------------------- the step
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_sd_dir):
    from flash_exp.backbones import build_backbone
    from flash_exp.method import build_distiller

    cfg = tiny_cfg(tiny_sd_dir, "backbone.gradient_checkpointing=true")
    bb = build_backbone(cfg.backbone).train()
    assert bb.base_denoiser.is_gradient_checkpointing
    distiller = build_distiller(bb, cfg)
    z = bb.encode_images(torch.rand(2, 3, 32, 32) * 2 - 1)
    cond, null = bb.encode_prompts(PROMPTS), bb.null_condition(2)
    loss_ckpt, grads_ckpt = generator_step(distiller, z, cond, null)
    bb.base_denoiser.disable_gradient_checkpointing()
    loss, grads = generator_step(distiller, z, cond, null)
    torch.testing.assert_close(loss_ckpt, loss)
    assert any(g.abs().max() > 0 for g in grads)
    for a, b in zip(grads_ckpt, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_offload_keeps_the_frozen_encoders_and_the_student_output(tiny_sd_dir):
    from flash_exp.training.module import FlashModule

    module = FlashModule(tiny_cfg(tiny_sd_dir, "trainer.offload_frozen=true"))
    bb = module.backbone
    frozen = bb.frozen_modules()
    assert {id(m) for m in frozen} == {id(bb.vae.encoder), id(bb.vae.quant_conv), id(bb.text_encoder)}
    module.on_fit_start()  # on a CPU run the option changes nothing
    assert bb._offload_to is None
    batch = {"pixels": torch.rand(2, 3, 32, 32) * 2 - 1, "captions": PROMPTS}
    x_t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([500])

    def student_output() -> torch.Tensor:
        prepared = module.task.prepare(batch, bb)
        with torch.no_grad():
            return module.distiller.student_x0(x_t + prepared.latents, t, prepared.condition)

    before = student_output()
    bb.offload_frozen(torch.device("cpu"))
    torch.testing.assert_close(student_output(), before, rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_offload_on_a_gpu_moves_only_the_frozen_encoders(tiny_sd_dir):
    from flash_exp.training.module import FlashModule

    module = FlashModule(tiny_cfg(tiny_sd_dir, "trainer.offload_frozen=true")).cuda()
    bb = module.backbone
    batch = {"pixels": torch.rand(2, 3, 32, 32, device="cuda") * 2 - 1, "captions": PROMPTS}
    x_t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1)).cuda()
    t = torch.tensor([500], device="cuda")

    def student_output() -> torch.Tensor:
        with bb.frozen_on_device():
            assert all(p.is_cuda for m in bb.frozen_modules() for p in m.parameters())
        prepared = module.task.prepare(batch, bb)
        with torch.no_grad():
            return module.distiller.student_x0(x_t + prepared.latents, t, prepared.condition)

    before = student_output()
    bb.offload_frozen(torch.device("cuda"))
    assert all(not p.is_cuda for m in bb.frozen_modules() for p in m.parameters())
    assert all(p.is_cuda for p in bb.vae.decoder.parameters()) and all(p.is_cuda for p in bb.unet.parameters())
    torch.testing.assert_close(student_output(), before)
    assert all(not p.is_cuda for m in bb.frozen_modules() for p in m.parameters())


def test_compile_teacher_runs_only_the_no_grad_teacher_calls_compiled(tiny_sd_dir, monkeypatch):
    from flash_exp.training.module import FlashModule

    calls: list[tuple[bool, bool]] = []

    def fake_compile(fn):
        def compiled(*args):
            calls.append((module.backbone._adapter_on, torch.is_grad_enabled()))
            return fn(*args)
        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    module = FlashModule(tiny_cfg(tiny_sd_dir, "trainer.compile_teacher=true"))
    bb = module.backbone
    z = bb.encode_images(torch.rand(2, 3, 32, 32) * 2 - 1)
    generator_step(module.distiller, z, bb.encode_prompts(PROMPTS), bb.null_condition(2))
    assert calls and set(calls) == {(False, False)}  # teacher (LoRA off), no gradients
    assert bb.student_samples > 0  # the student ran, uncompiled


# ---------------------------------------------------------------------------------- latent cache
@pytest.fixture
def raw_shard(tmp_path) -> Path:
    return write_shard(tmp_path / "raw-0.tar", solid_samples(9))


def test_cached_shards_give_the_same_first_batch_and_loss(tmp_path, tiny_sd_dir, raw_shard):
    from flash_exp.data.cache_latents import main
    from flash_exp.training.datamodule import FlashDataModule
    from flash_exp.training.module import FlashModule

    overrides = ["backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32",
                 "backbone.lora.rank=4", "backbone.lora.alpha=4", "loss.distill.type=l2",
                 f"data.shards=[{raw_shard}]", "data.min_aesthetic_score=6.0"]
    shards = main(["--out", str(tmp_path / "cache"), "--device", "cpu", "--batch-size", "3", *overrides])
    assert [s.name for s in shards] == ["cache-000000.tar"]
    raw_cfg = tiny_cfg(tiny_sd_dir, f"data.shards=[{raw_shard}]", "data.min_aesthetic_score=6.0")
    cached_cfg = tiny_cfg(tiny_sd_dir, f"data.shards=[{shards[0]}]", "data.cached=true",
                          "data.min_aesthetic_score=6.0")
    raw = next(iter(FlashDataModule(raw_cfg).stream()))
    cached = next(iter(FlashDataModule(cached_cfg).stream()))
    assert cached["captions"] == raw["captions"] and "pixels" not in cached

    module = FlashModule(raw_cfg)
    prepared_raw = module.task.prepare(raw, module.backbone)
    prepared_cached = module.task.prepare(cached, module.backbone)
    torch.testing.assert_close(prepared_cached.latents, prepared_raw.latents)
    torch.testing.assert_close(prepared_cached.condition.kwargs, prepared_raw.condition.kwargs)
    loss_raw, _ = generator_step(module.distiller, prepared_raw.latents, prepared_raw.condition,
                                 prepared_raw.null_condition)
    loss_cached, _ = generator_step(module.distiller, prepared_cached.latents, prepared_cached.condition,
                                    prepared_cached.null_condition)
    torch.testing.assert_close(loss_cached, loss_raw)


def test_a_cache_of_another_resolution_or_an_image_stream_over_a_cache_fails(tmp_path, tiny_sd_dir, raw_shard):
    from flash_exp.data.cache_latents import write_cache
    from flash_exp.data.cached_latents_stream import CachedLatentStream
    from flash_exp.data.webdataset import CaptionedImageStream

    cfg = tiny_cfg(tiny_sd_dir, f"data.shards=[{raw_shard}]", "data.min_aesthetic_score=null")
    shard = str(write_cache(cfg, tmp_path / "cache", torch.device("cpu"))[0])
    with pytest.raises(ValueError, match="resolution"):
        next(iter(CachedLatentStream([shard], {"family": "sd", "resolution": 64}, 2)))
    with pytest.raises(ValueError, match=r"data\.cached=true"):
        next(iter(CaptionedImageStream([shard], 32, 2)))
    with pytest.raises(ValueError, match=r"data\.cached=true"):
        next(iter(CachedLatentStream([str(raw_shard)], {"family": "sd", "resolution": 32}, 2)))


@pytest.mark.slow
def test_training_on_cached_shards(tmp_path, tiny_sd_dir, raw_shard):
    from flash_exp.data.cache_latents import write_cache
    from flash_exp.train import train

    cfg = tiny_cfg(tiny_sd_dir, f"data.shards=[{raw_shard}]", "data.min_aesthetic_score=null")
    shard = write_cache(cfg, tmp_path / "cache", torch.device("cpu"))[0]
    cached = tiny_cfg(tiny_sd_dir, f"data.shards=[{shard}]", "data.cached=true", "trainer.max_steps=2",
                      "trainer.offload_frozen=true", "trainer.sample_every=0", "trainer.sample_nfe=[1]",
                      "trainer.num_sample_prompts=1", "backbone.teacher_sampling.steps=2")
    train(cached, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
