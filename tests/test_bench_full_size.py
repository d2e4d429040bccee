"""The full-size bench: the architecture files build the published models, a case that cannot fit is
skipped with its reason, the report keeps what it does not own, ``plan`` reads a measured GPU run,
and (slow) the real SD1.5 architecture trains one step on this CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch

from flash_exp.bench.architectures import model_specs, parameter_count, write_pipeline
from flash_exp.bench.full_size import (
    Case,
    card_check,
    case_config,
    gpu_weights_bytes,
    prepare_backbone,
    prepare_step,
    run_case,
    write_random_vgg16,
)
from flash_exp.bench.report import FULL_SIZE_HEADING, with_full_size_section

# Published parameter counts (model cards, the diffusers/transformers docs): SD1.5 UNet 859.52M, the
# SD VAE 83.65M, CLIP ViT-L/14 text tower 123.06M, SDXL UNet 2.567B, OpenCLIP bigG text tower with its
# projection 694.66M, T5 v1.1 XXL encoder 4.762B.
PUBLISHED = {("sd15", "unet"): 859_520_964, ("sd15", "vae"): 83_653_863, ("sd15", "text_encoder"): 123_060_480,
             ("sdxl", "unet"): 2_567_463_684, ("sdxl", "text_encoder_2"): 694_659_840}


@pytest.mark.parametrize("backbone,attr", list(PUBLISHED))
def test_the_architecture_files_build_the_published_models(backbone, attr):
    spec = next(s for s in model_specs(backbone) if s.attr == attr)
    assert parameter_count(spec) == PUBLISHED[backbone, attr]


def test_the_transformers_have_their_published_sizes():
    """PixArt-alpha XL/2: 0.6B parameters (paper: 611M); SD3 medium: 2B (2.03B); T5-XXL is shortened to one block."""
    sizes = {(b, s.attr): parameter_count(s) for b in ("pixart", "sd3") for s in model_specs(b)}
    assert sizes["pixart", "transformer"] == pytest.approx(611e6, rel=0.005)
    assert sizes["sd3", "transformer"] == pytest.approx(2.03e9, rel=0.005)
    t5 = next(s for s in model_specs("pixart") if s.attr == "text_encoder")
    assert t5.layers == 1 and t5.config()["d_model"] == 4096


@pytest.mark.parametrize(("backbone", "published", "pos_embed_max_size", "width"),
                         [("sd35", 2.5e9, 384, 1536), ("sd35_large", 8.1e9, 192, 2432)])
def test_the_sd35_transformers_have_their_model_cards_sizes(backbone, published, pos_embed_max_size, width):
    """SD3.5 Medium 2.5B, Large 8.1B (model cards), counting the position table the checkpoint stores as a
    weight (diffusers holds it as a buffer, pos_embed_max_size^2 x width); Medium is MMDiT-X (13 dual
    attention blocks), both with QK RMS norm."""
    spec = next(s for s in model_specs(backbone) if s.attr == "transformer")
    assert parameter_count(spec) + pos_embed_max_size**2 * width == pytest.approx(published, rel=0.015)
    config = spec.config()
    assert config["qk_norm"] == "rms_norm" and len(config.get("dual_attention_layers", ())) == (13 if backbone == "sd35" else 0)


def test_a_case_whose_card_does_not_fit_is_skipped_with_its_reason():
    assert card_check("gpu40", free_bytes=30e9, weights_bytes=5e9) == (
        "skipped: gpu40 is meant for a 40 GB card and 30.0 GB are free on this device")
    assert card_check("gpu24", free_bytes=79e9, weights_bytes=30e9) == (
        "skipped: the weights on the GPU alone take 30.0 GB, more than gpu24's 24 GB")
    assert card_check("gpu24", free_bytes=79e9, weights_bytes=5e9) is None
    assert card_check("cpu", free_bytes=0, weights_bytes=5e9) is None


def test_run_case_checks_free_memory_before_building_anything(tmp_path):
    """On a (here simulated) GPU with 20 GB free, gpu24 is skipped before any weight is read: the
    pipeline directory does not even exist."""
    logged = []
    result = run_case(Case("sdxl", "gpu24"), tmp_path / "absent", tmp_path / "vgg.pth", torch.device("cuda"),
                      batches=3, warmup=1, free_memory=lambda: 20e9, log=logged.append)
    assert result.skipped == "skipped: gpu24 is meant for a 24 GB card and 20.0 GB are free on this device"
    assert result.rows == [] and logged == [f"sdxl gpu24: {result.skipped}"]
    assert (result.resolution, result.batch_size, result.k) == (1024, 1, 32)


def test_the_weights_on_the_gpu_follow_the_preset(tmp_path):
    """gpu24/gpu40 keep the text encoders in CPU memory and the frozen weights in bfloat16; gpu80 holds
    everything in float32."""
    unet, vae, text = (PUBLISHED["sd15", k] for k in ("unet", "vae", "text_encoder"))
    cfg24 = case_config(Case("sd15", "gpu24"), tmp_path, tmp_path / "vgg.pth", None)
    cfg80 = case_config(Case("sd15", "gpu80"), tmp_path, tmp_path / "vgg.pth", None)
    assert gpu_weights_bytes(cfg24) == 2 * (unet + vae)
    assert gpu_weights_bytes(cfg80) == 4 * (unet + vae + text)


def test_the_full_size_section_replaces_itself_and_keeps_the_rest():
    run = {"command": "python -m flash_exp.bench --full-size", "torch": "2", "cuda": "12", "diffusers": "0.3",
           "device_type": "cuda", "batches": 3, "warmup": 1, "evaluation": [],
           "cases": [{"backbone": "sdxl", "preset": "gpu24", "resolution": 1024, "batch_size": 1, "k": 32,
                      "rows": [{"start_index": 0, "median_s": 2.5, "peak_allocated_gb": 20.0, "peak_reserved_gb": 22.0},
                               {"start_index": 10, "median_s": 1.75, "peak_allocated_gb": 19.0,
                                "peak_reserved_gb": 22.0}],
                      "sampling_images_per_s": 1.5, "skipped": None, "note": None},
                     {"backbone": "sd3", "preset": "gpu80", "resolution": 1024, "batch_size": 2, "k": 32, "rows": [],
                      "skipped": "skipped: past the 480 s budget of this run", "note": None}]}
    first = with_full_size_section("# Benchmarks\n\n## Training step\n\nkept\n", {"NVIDIA H100": run})
    again = with_full_size_section(first, {"NVIDIA H100": run})
    assert again == first and first.count(FULL_SIZE_HEADING) == 1 and "kept" in first
    assert "| sdxl | gpu24 | 1024 | 1 | 32 | 2.50 | 1.75 (index 10) | 20.0 / 22.0 | 1.50 |" in first
    assert "| sd3 | gpu80 | 1024 | 2 | 32 | skipped: past the 480 s budget of this run |" in first
    assert "pending a GPU run" not in first
    assert "pending a GPU run" in with_full_size_section(first, {})


def test_plan_reads_a_measured_gpu_run(tmp_path, monkeypatch):
    """Two start indices give a line: s/batch = slope x teacher evaluations + rest; plan's batch runs
    2 E[K - i] + 2 (GAN) + 2 (DMD) teacher evaluations in phase 3."""
    from flash_exp import plan as plan_module
    from flash_exp.config import compose_train_config

    cfg = compose_train_config(["backbone=sd15", "trainer=gpu80", "data.shards=[unused]"])
    case = {"backbone": "sd15", "preset": "gpu80", "resolution": 512, "batch_size": 4, "k": 32,
            "frozen_dtype": "float32", "gradient_checkpointing": False, "offload_frozen": False,
            "rows": [{"teacher_evals": 68.0, "median_s": 2.0}, {"teacher_evals": 48.0, "median_s": 1.5}]}
    bench = tmp_path / "benchmarks.json"
    bench.write_text(json.dumps({"full_size": {"NVIDIA H100 80GB HBM3": {"device_type": "cuda", "cases": [case]}}}))
    monkeypatch.setattr(plan_module, "BENCHMARKS_FILE", bench)
    slope, rest = (2.0 - 1.5) / (68 - 48), 2.0 - 68 * (2.0 - 1.5) / (68 - 48)
    seconds, source = plan_module.seconds_per_batch(cfg, 60.0, 40.0, "h100")
    assert seconds == pytest.approx(slope * 40 + rest)
    assert source.startswith("measured") and "NVIDIA H100 80GB HBM3" in source
    _, estimate = plan_module.seconds_per_batch(cfg, 60.0, 40.0, "a100")  # no A100 run: the FLOP estimate
    assert estimate.startswith("FLOP-based estimate")


@pytest.mark.slow
def test_the_full_size_sd15_trains_one_step_on_cpu(tmp_path):
    """The real SD1.5 UNet, CLIP-L text encoder and VAE (random weights) at 64 px, the paper's K = 32,
    LPIPS on a random VGG16, phase 3, start index 24: the loss is finite and the LoRA moved. The
    discriminator reads the teacher's output (the mid-block map is 1x1 at 64 px)."""
    pretrained = write_pipeline("sd15", tmp_path / "sd15")
    vgg = write_random_vgg16(tmp_path / "vgg.pth")
    case = Case("sd15", "cpu", 64, 1, ("backbone.discriminator.input=output", "backbone.discriminator.head=generic"))
    cfg = case_config(case, pretrained, vgg, 24)
    assert (cfg.phases.k[3], cfg.loss.distill.type) == (32, "lpips")
    backbone = prepare_backbone(cfg, torch.device("cpu"))
    assert backbone.unet.config.block_out_channels == [320, 640, 1280, 1280]
    runner = prepare_step(backbone, cfg, torch.device("cpu"))
    assert runner.z.shape == (1, 4, 8, 8)
    assert runner.cond.kwargs["encoder_hidden_states"].shape == (1, 77, 768)
    before = {n: p.detach().clone() for n, p in backbone.unet.named_parameters() if "lora_" in n}
    runner(3)
    after = dict(backbone.unet.named_parameters())
    assert math.isfinite(runner.losses[0]) and math.isfinite(runner.losses[1])
    assert all(not torch.equal(before[n], after[n]) for n in before if ".lora_B." in n)
    assert backbone.teacher_samples == 2 * (32 - 24) + 4  # the rollout (CFG batched), DMD real score, GAN


def test_unknown_backbones_are_refused(capsys):
    from flash_exp.bench import main

    with pytest.raises(SystemExit):
        main(["--full-size", "--cases", "sd15,sd2"])
    assert "--cases: unknown backbone(s) sd2; known: sd15, sdxl, pixart, sd3, sd35, sd35_large" in capsys.readouterr().err
