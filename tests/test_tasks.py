"""Conditional tasks: inpainting, super-resolution, T2I-Adapter canny, face swapping.

Fast tests: composition (teacher per task and backbone, overrides kept, unsupported pairs refused),
the data-pipeline hooks (masks, degradation, Canny, face boxes; determinism and exact resume), the
conditioning tensors per backbone on tiny SD1.5 / SDXL teachers, identical conditions for teacher and
student (a hook on the denoiser), and the restoration metrics. Slow tests train every task end to end
on tiny teachers (in-process and one CLI run) and, when the toy world is built, on the toy teachers.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flash_exp.config import ConfigError, validate
from tests.conftest import REPO, compose

pytest_plugins = ["tests.fixtures_eval"]

TINY = ["backbone.resolution=32", "backbone.lora.rank=4", "backbone.lora.alpha=4",
        "backbone.discriminator.head=generic", "backbone.discriminator.channels=[16,32]", "loss.distill.type=l2"]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def task_dirs(tmp_path_factory, tiny_sd_dir):
    """``task_dirs(name)``: a tiny teacher directory, built once per module."""
    from tests import tiny_models
    from tests import tiny_task_models as T

    builders = {"sd_inpainting": T.build_tiny_sd_inpainting, "sdxl_inpainting": T.build_tiny_sdxl_inpainting,
                "upscaler": T.build_tiny_upscaler, "adapter": T.build_tiny_adapter, "faceswap": T.build_tiny_faceswap,
                "sdxl": tiny_models.build_tiny_sdxl}
    built: dict[str, Path] = {"sd": tiny_sd_dir}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = builders[name](tmp_path_factory.mktemp(name) / "pipe")
        return built[name]

    return get


@pytest.fixture(scope="module")
def shape_shards(tmp_path_factory) -> list[str]:
    from flash_exp.data.shard_writer import write_shards
    from flash_exp.toyworld.shapes import iter_samples

    out = tmp_path_factory.mktemp("shapes")
    return [str(p) for p in write_shards(iter_samples(0, "train", 24), str(out / "shapes-%06d.tar"), 12)]


@pytest.fixture(scope="module")
def face_shards(tmp_path_factory) -> list[str]:
    from flash_exp.data.shard_writer import write_shards
    from flash_exp.toyworld.faces import iter_face_samples

    out = tmp_path_factory.mktemp("faces")
    return [str(p) for p in write_shards(iter_face_samples(0, "train", 16), str(out / "faces-%06d.tar"), 8)]


def shards_arg(shards: list[str]) -> str:
    return "data.shards=[" + ",".join(shards) + "]"


CASES = {  # (task, backbone) -> (teacher fixture, extra overrides, data)
    ("inpainting", "sd15"): ("sd_inpainting", [], "shapes"),
    ("inpainting", "sdxl"): ("sdxl_inpainting", [], "shapes"),
    ("superres", "sd15"): ("upscaler", [], "shapes"),
    # 32 px flat shapes: the toy's Canny thresholds (the paper's 100 / 200 find no edge at this size)
    ("adapter_canny", "sd15"): ("sd", ["task.canny.detect_resolution=64", "task.canny.low_threshold=20",
                                       "task.canny.high_threshold=60"], "shapes"),
    ("adapter_canny", "sdxl"): ("sdxl", ["task.canny.detect_resolution=null", "task.canny.low_threshold=20",
                                         "task.canny.high_threshold=60", "task.canny.blur_sigma=0"], "shapes"),
    ("faceswap", "sd15"): ("faceswap", ["task.identity.reference_size=32"], "faces"),
}


def case_cfg(task: str, backbone: str, task_dirs, shape_shards, face_shards, *overrides: str):
    fixture, extra, data = CASES[(task, backbone)]
    items = [f"backbone={backbone}", f"task={task}", f"backbone.pretrained={task_dirs(fixture)}", *TINY, *extra,
             shards_arg(face_shards if data == "faces" else shape_shards)]
    if task == "adapter_canny":
        items.append(f"task.adapter.pretrained={task_dirs('adapter')}")
    return validate(compose([*items, *overrides]))


def first_batch(cfg, batch_size: int = 2) -> dict:
    from flash_exp.data.webdataset import CaptionedImageStream
    from flash_exp.tasks import build_sample_transform

    stream = CaptionedImageStream(list(cfg.data.shards), cfg.backbone.resolution, batch_size, seed=cfg.seed,
                                  shuffle_buffer=1, min_aesthetic_score=None,
                                  transform=build_sample_transform(cfg.task, cfg.backbone.resolution))
    return next(iter(stream))


# ------------------------------------------------------------------------------------ composition
def test_each_task_picks_its_teacher_and_a_command_line_teacher_wins():
    assert compose(["backbone=sd15", "task=inpainting"]).backbone.pretrained == \
        "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert compose(["backbone=sdxl", "task=inpainting"]).backbone.pretrained == \
        "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
    assert compose(["backbone=sdxl", "task=inpainting", "backbone.pretrained=/data/inpaint"]).backbone.pretrained \
        == "/data/inpaint"
    up = compose(["backbone=sd15", "task=superres"])
    assert up.backbone.pretrained == "stabilityai/stable-diffusion-x4-upscaler"
    assert up.backbone.prediction == "v_prediction" and up.task.degradation.scale == 4
    canny = compose(["backbone=sdxl", "task=adapter_canny"])
    assert canny.backbone.pretrained == "stabilityai/stable-diffusion-xl-base-1.0"  # the base model, unchanged
    assert canny.task.adapter.pretrained == "TencentARC/t2i-adapter-canny-sdxl-1.0"
    assert canny.task.adapter.conditioning_scale == 0.8 and canny.task.canny.detect_resolution == 384
    assert list(canny.phases.k) == [16, 16, 16, 16]  # the paper's canny K
    assert list(compose(["backbone=sdxl", "task=adapter_canny", "phases=k32"]).phases.k) == [32] * 4
    # t2i untouched
    assert compose(["backbone=sd15"]).backbone.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert compose(["backbone=sd15"]).task.name == "t2i"


@pytest.mark.parametrize("task,backbone", [("adapter_canny", "pixart"), ("adapter_canny", "sd3"),
                                           ("inpainting", "pixart"), ("superres", "sdxl"), ("faceswap", "sd3")])
def test_an_unsupported_pair_fails_at_validation_listing_the_supported_backbones(task, backbone):
    with pytest.raises(ConfigError) as err:
        validate(compose([f"backbone={backbone}", f"task={task}", "data.shards=[x]"]))
    message = str(err.value)
    assert f"task='{task}'" in message and f"family '{compose([f'backbone={backbone}']).backbone.family}'" in message
    supported = message.split("supported:")[1]
    assert "sd15" in supported and "toy" in supported and backbone not in supported
    assert ("sdxl" in supported) == (task != "superres")


def test_the_cli_refuses_an_unsupported_pair_before_loading_anything(tmp_path):
    env = {**os.environ, "FLASH_EXP_RUNS": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "flash_exp.train", "task=adapter_canny", "backbone=pixart",
                           "data.shards=[unused]"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "does not run on backbone family 'pixart'" in proc.stderr and "sd15 | sdxl | toy" in proc.stderr


def test_faceswap_without_a_teacher_asks_for_one():
    with pytest.raises(ConfigError, match="backbone.pretrained.*no public sd15 teacher"):
        validate(compose(["backbone=sd15", "task=faceswap", "data.shards=[x]"]))
    cfg = validate(compose(["backbone=sd15", "task=faceswap", "backbone.pretrained=/x", "data.shards=[x]"]))
    assert cfg.task.identity.pretrained == "/x"  # the identity encoder lives in the teacher directory


def test_task_options_are_checked():
    with pytest.raises(ConfigError, match="task.mask.coverage"):
        validate(compose(["backbone=sd15", "task=inpainting", "task.mask.coverage=[0.6,0.2]", "data.shards=[x]"]))
    with pytest.raises(ConfigError, match="task.degradation.noise_level"):
        validate(compose(["backbone=sd15", "task=superres", "task.degradation.noise_level=400", "data.shards=[x]"]))


# ------------------------------------------------------------------------------------ data hooks
def test_masks_cover_the_configured_fraction():
    from flash_exp.config import MaskConfig
    from flash_exp.tasks.inpainting import draw_mask

    g = torch.Generator().manual_seed(0)
    for kind in ("box", "stroke"):
        cover = [draw_mask(MaskConfig(kind=kind, coverage=[0.2, 0.3]), 64, g).mean().item() for _ in range(20)]
        assert all(0.1 <= c <= 0.45 for c in cover), (kind, cover)
    mask = draw_mask(MaskConfig(), 64, torch.Generator().manual_seed(3))
    assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(mask, draw_mask(MaskConfig(), 64, torch.Generator().manual_seed(3)))


def test_canny_finds_thin_outlines_and_hysteresis_follows_weak_edges():
    from flash_exp.tasks.canny import canny, hysteresis

    image = -torch.ones(3, 32, 32)
    image[:, 8:24, 8:24] = 1.0  # a white square on black
    edges = canny(image, 100, 200, sigma=1.0)[0]
    assert edges.shape == (32, 32) and set(edges.unique().tolist()) == {0.0, 1.0}
    assert edges[12:20, 12:20].sum() == 0 and edges[:4].sum() == 0  # nothing inside or far outside
    for row in range(10, 22):  # the left and right sides: thin lines near x = 7.5
        cols = edges[row].nonzero().flatten().tolist()
        assert any(6 <= c <= 9 for c in cols) and any(22 <= c <= 25 for c in cols)
        assert len([c for c in cols if c < 16]) <= 2
    flat = canny(torch.zeros(3, 32, 32), 100, 200)
    assert flat.sum() == 0
    magnitude = torch.tensor([[[[0.0, 250, 150, 150, 0, 150]]]])  # the last weak pixel is not connected
    assert hysteresis(magnitude, 100, 200).int().tolist() == [[[[0, 1, 1, 1, 0, 0]]]]


def test_degradation_downscales_blurs_and_noises():
    from flash_exp.config import DegradationConfig
    from flash_exp.tasks.superres import degrade

    image = torch.rand(3, 32, 32) * 2 - 1
    plain = degrade(image, DegradationConfig(), torch.Generator().manual_seed(0))
    assert plain.shape == (3, 8, 8)
    torch.testing.assert_close(plain.mean(), image.mean(), atol=0.05, rtol=0)
    noisy = degrade(image, DegradationConfig(noise_std=[0.2, 0.2]), torch.Generator().manual_seed(0))
    assert 0.1 < (noisy - plain).std() < 0.3
    blurred = degrade(image, DegradationConfig(blur_sigma=[3.0, 3.0], scale=2), torch.Generator().manual_seed(0))
    assert blurred.shape == (3, 16, 16) and blurred.std() < degrade(image, DegradationConfig(scale=2),
                                                                      torch.Generator().manual_seed(0)).std()


def test_the_task_hook_is_seeded_by_sample_position_and_resumes_exactly(shape_shards):
    from flash_exp.config import TaskConfig
    from flash_exp.data.webdataset import CaptionedImageStream
    from flash_exp.tasks import build_sample_transform

    transform = build_sample_transform(TaskConfig(name="inpainting"), 32)

    def take(seed=0, start=0, n=5):
        stream = CaptionedImageStream(shape_shards, 32, 3, seed=seed, shuffle_buffer=8, transform=transform)
        stream.start_batch = start
        it = iter(stream)
        return [next(it) for _ in range(n)]

    full, again = take(), take()
    assert all(b["mask"].shape == (3, 1, 32, 32) for b in full)
    assert all(torch.equal(a["mask"], b["mask"]) for a, b in zip(full, again, strict=True))
    resumed = take(start=3, n=2)
    for a, b in zip(full[3:], resumed, strict=True):
        assert a["captions"] == b["captions"] and torch.equal(a["mask"], b["mask"])
    other = take(seed=1)
    assert not all(torch.equal(a["mask"], b["mask"]) for a, b in zip(full, other, strict=True))


def test_face_samples_carry_a_reference_of_the_same_identity_and_a_face_box(face_shards):
    from flash_exp.config import TaskConfig
    from flash_exp.data.webdataset import CaptionedImageStream
    from flash_exp.tasks import build_sample_transform
    from flash_exp.toyworld.faces import SKINS, make_face_sample

    sample = make_face_sample(0, "train", 3)
    meta = sample["json"]
    x0, y0, x1, y1 = meta["face_box"]
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and meta["caption"].startswith("a face on a")
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    target = pil_to_tensor(Image.open(io.BytesIO(sample["jpg"])).convert("RGB")).permute(1, 2, 0).float()
    cy, cx = int((y0 + y1) / 2 * 32 + 3), int((x0 + x1) / 2 * 32)  # the cheek, below the eyes
    skin = torch.tensor(SKINS[meta["identity"]["skin"]], dtype=torch.float32)
    assert (target[cy, cx] - skin).abs().max() < 40

    from flash_exp.config import IdentityConfig

    cfg = TaskConfig(name="faceswap", identity=IdentityConfig(reference_size=32))
    stream = CaptionedImageStream(face_shards, 32, 4, shuffle_buffer=1, transform=build_sample_transform(cfg, 32))
    batch = next(iter(stream))
    assert batch["reference"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert 0.1 < batch["mask"].mean() < 0.8
    # a sample without a reference is skipped and counted
    from flash_exp.data.shard_writer import write_shards

    bare = dict(make_face_sample(0, "train", 0), __key__="bare")
    del bare["ref.jpg"]
    shard = write_shards([bare, make_face_sample(0, "train", 1), make_face_sample(0, "train", 2)],
                         str(Path(face_shards[0]).parent / "bare-%d.tar"), 10)
    stream = CaptionedImageStream([str(p) for p in shard], 32, 2, shuffle_buffer=1,
                                  transform=build_sample_transform(cfg, 32))
    assert int(next(iter(stream))["skipped"]) == 1


# ------------------------------------------------------------------------------------ conditioning
@pytest.mark.parametrize("backbone", ["sd15", "sdxl"])
def test_inpainting_concatenates_mask_and_masked_latents(backbone, task_dirs, shape_shards, face_shards):
    from flash_exp.backbones import build_backbone
    from flash_exp.tasks import build_task

    cfg = case_cfg("inpainting", backbone, task_dirs, shape_shards, face_shards)
    bb, task = build_backbone(cfg.backbone), build_task(cfg.task)
    batch = first_batch(cfg)
    prepared = task.prepare(batch, bb)
    assert bb.unet.config.in_channels == 9 and bb.extra_input_channels() == 5
    concat = prepared.condition.concat
    assert concat.shape == (2, 5, 16, 16)
    mask_small = torch.nn.functional.interpolate(batch["mask"], size=(16, 16))
    torch.testing.assert_close(concat[:, :1], mask_small)
    masked = bb.encode_images(batch["pixels"] * (batch["mask"] < 0.5))
    torch.testing.assert_close(concat[:, 1:], masked)
    assert prepared.null_condition.concat is concat  # the null branch sees the same mask and image
    width = 32 if backbone == "sd15" else 64
    assert prepared.condition.kwargs["encoder_hidden_states"].shape[-1] == width


def test_superres_concatenates_the_noise_augmented_low_res_image_with_its_level(task_dirs, shape_shards,
                                                                                face_shards):
    from flash_exp.backbones import build_backbone
    from flash_exp.tasks import build_task
    from flash_exp.tasks.superres import noise_augment

    cfg = case_cfg("superres", "sd15", task_dirs, shape_shards, face_shards)
    bb, task = build_backbone(cfg.backbone), build_task(cfg.task)
    batch = first_batch(cfg)
    assert batch["lowres"].shape == (2, 3, 8, 8)
    prepared = task.prepare(batch, bb)
    assert prepared.latents.shape == (2, 4, 8, 8)  # f=4 VAE: the 8x8 low-res is at the latent resolution
    assert bb.unet.config.in_channels == 7 and prepared.condition.concat.shape == (2, 3, 8, 8)
    assert prepared.condition.kwargs["class_labels"].tolist() == [20, 20]
    assert prepared.null_condition.kwargs["class_labels"].tolist() == [20, 20]
    assert prepared.null_condition.concat is prepared.condition.concat
    noise = torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(int(batch["noise_seed"][0])))
    torch.testing.assert_close(prepared.condition.concat[0], noise_augment(batch["lowres"][:1], noise[None], 20)[0])
    assert bb.cfg.prediction == "v_prediction"


@pytest.mark.parametrize("backbone", ["sd15", "sdxl"])
def test_the_adapter_residuals_fit_the_unet_blocks(backbone, task_dirs, shape_shards, face_shards):
    from flash_exp.backbones import build_backbone
    from flash_exp.tasks import build_task

    cfg = case_cfg("adapter_canny", backbone, task_dirs, shape_shards, face_shards)
    bb, task = build_backbone(cfg.backbone), build_task(cfg.task)
    batch = first_batch(cfg)
    assert batch["edges"].shape == (2, 1, 32, 32) and batch["edges"].sum() > 0
    prepared = task.prepare(batch, bb)
    residuals = prepared.condition.kwargs["down_intrablock_additional_residuals"]
    assert [tuple(r.shape) for r in residuals] == [(2, 32, 8, 8), (2, 64, 8, 8)]
    raw = task.adapter(batch["edges"])
    torch.testing.assert_close(residuals[0], raw[0] * 0.8)
    assert prepared.null_condition.kwargs["down_intrablock_additional_residuals"][1] is residuals[1]
    assert not any(p.requires_grad for p in task.parameters())
    with torch.no_grad(), bb.adapter(False):  # the UNet consumes its copy: the condition keeps its list
        bb.denoise(prepared.latents, torch.tensor([500]), prepared.condition)
    assert len(prepared.condition.kwargs["down_intrablock_additional_residuals"]) == 2


def test_faceswap_appends_identity_tokens_and_inpaints_the_face_box(task_dirs, shape_shards, face_shards):
    from flash_exp.backbones import build_backbone
    from flash_exp.tasks import build_task

    cfg = case_cfg("faceswap", "sd15", task_dirs, shape_shards, face_shards)
    bb, task = build_backbone(cfg.backbone), build_task(cfg.task)
    batch = first_batch(cfg)
    prepared = task.prepare(batch, bb)
    text = bb.encode_prompts(list(batch["captions"])).kwargs["encoder_hidden_states"]
    states = prepared.condition.kwargs["encoder_hidden_states"]
    assert states.shape == (2, text.shape[1] + 4, 32) and prepared.condition.concat.shape == (2, 5, 16, 16)
    torch.testing.assert_close(states[:, : text.shape[1]], text)
    null_states = prepared.null_condition.kwargs["encoder_hidden_states"]
    assert null_states.shape == states.shape and not torch.allclose(null_states[:, -4:], states[:, -4:])
    swapped = task.grid_batch(batch)
    assert torch.equal(swapped["reference"][0], batch["reference"][1]) and task.ground_truth(swapped) is None


@pytest.mark.parametrize("task,backbone", sorted(CASES))
def test_teacher_and_student_receive_the_identical_condition(task, backbone, task_dirs, shape_shards, face_shards):
    """Hook the denoiser during one generator step: every student, teacher (both CFG halves) and
    discriminator call gets the same task inputs."""
    from flash_exp.backbones import build_backbone
    from flash_exp.method import build_distiller
    from flash_exp.tasks import build_task

    cfg = case_cfg(task, backbone, task_dirs, shape_shards, face_shards, "phases.k=[4,4,4,4]")
    bb, module = build_backbone(cfg.backbone), build_task(cfg.task)
    prepared = module.prepare(first_batch(cfg), bb)
    calls = []

    def record(_module, args, kwargs):
        x = args[0]
        residuals = kwargs.get("down_intrablock_additional_residuals")
        calls.append({"student": bb._adapter_on, "extra": x[:, 4:].clone(),
                      "residuals": [r.clone() for r in residuals] if residuals else None,
                      "labels": kwargs.get("class_labels"), "states": kwargs["encoder_hidden_states"].clone()})

    handle = bb.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        distiller = build_distiller(bb, cfg)
        distiller.generator_loss(prepared.latents, prepared.condition, prepared.null_condition, 6000,
                                 torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    student = [c for c in calls if c["student"]]
    teacher = [c for c in calls if not c["student"]]
    assert student and teacher
    reference = student[0]
    b = prepared.latents.shape[0]
    for call in calls:
        n = call["extra"].shape[0]
        halves = [slice(0, b), slice(b, 2 * b)] if n == 2 * b else [slice(0, n)]
        for half in halves:
            torch.testing.assert_close(call["extra"][half], reference["extra"])
            if reference["residuals"] is not None:
                for r, ref in zip(call["residuals"], reference["residuals"], strict=True):
                    torch.testing.assert_close(r[half], ref)
            if reference["labels"] is not None:
                assert torch.equal(call["labels"][half].cpu(), reference["labels"].cpu())
        if n == 2 * b and task == "faceswap":  # the conditional half has the identity tokens of the student
            torch.testing.assert_close(call["states"][:b, -4:], reference["states"][:, -4:])
    if task in ("inpainting", "superres", "faceswap"):
        assert reference["extra"].shape[1] == bb.extra_input_channels() > 0
    else:
        assert reference["extra"].shape[1] == 0 and len(reference["residuals"]) == 2


# ------------------------------------------------------------------------------------ metrics
def test_restoration_metrics_and_optional_lpips(tmp_path, monkeypatch):
    from flash_exp.metrics.restoration import edge_f1, masked_psnr, psnr, restoration_metrics, ssim

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no VGG weights here
    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    b = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    out = restoration_metrics(b, a)
    assert 20 < out["psnr"] < 30 and 0 < out["ssim"] < 1 and out["psnr"] == pytest.approx(psnr(b, a))
    assert out["lpips"] is None and "vgg16" in out["lpips_note"]
    assert ssim(a, a) == pytest.approx(1.0)
    half = torch.zeros(2, 1, 32, 32)
    half[..., :16] = 1
    c = a.clone()
    c[..., 16:] = 0
    assert masked_psnr(c, a, half) > 90 and masked_psnr(c, a, 1 - half) < 15
    edges = torch.zeros(1, 1, 16, 16)
    edges[..., 8, 2:14] = 1
    assert edge_f1(edges, edges) == pytest.approx(1.0)
    assert edge_f1(edges.roll(1, dims=-2), edges) == pytest.approx(1.0)  # one pixel off is tolerated
    assert edge_f1(edges.roll(4, dims=-2), edges) == 0.0


# ------------------------------------------------------------------------------------ training (slow)
def train_overrides(*extra: str) -> list[str]:
    return ["backbone.teacher_sampling.steps=2", "data.batch_size=2", "data.min_aesthetic_score=null",
            "data.shuffle_buffer=8", "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu",
            "trainer.checkpoint_every=2", "trainer.sample_every=0", "trainer.sample_nfe=[1,2]",
            "task.num_grid_samples=2", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("task,backbone", [("inpainting", "sd15"), ("inpainting", "sdxl"), ("superres", "sd15"),
                                           ("adapter_canny", "sd15"), ("faceswap", "sd15")])
def test_each_task_trains_end_to_end_in_process(task, backbone, tmp_path, task_dirs, shape_shards, face_shards):
    from flash_exp.train import train

    cfg = case_cfg(task, backbone, task_dirs, shape_shards, face_shards, *train_overrides("trainer.max_steps=2"))
    export = train(cfg, tmp_path / "run")
    assert (export / "pytorch_lora_weights.safetensors").is_file()
    grid = tmp_path / "run" / "samples" / "step_000002.png"
    assert grid.is_file()
    record = json.loads(grid.with_suffix(".json").read_text())
    assert record["task"] == task and "student 1 NFE" in record["scores"]
    first = {"inpainting": "masked input", "superres": "low-res input (x4)", "adapter_canny": "canny edges",
             "faceswap": "reference identity"}[task]
    assert record["rows"][0] == first
    if task in ("inpainting", "superres"):
        assert record["rows"][-1] == "ground truth" and "psnr" in record["scores"]["student 2 NFE"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["global_step"] == 2
    assert not any(k.startswith("task.") for k in state["state_dict"])  # frozen task models are not saved


@pytest.mark.slow
def test_the_cli_trains_sdxl_inpainting_from_a_local_teacher(tmp_path, task_dirs, shape_shards):
    env = {**os.environ, "FLASH_EXP_RUNS": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = ["backbone=sdxl", "task=inpainting", f"backbone.pretrained={task_dirs('sdxl_inpainting')}",
            "trainer.max_steps=2", *TINY, shards_arg(shape_shards), *train_overrides(), f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "-m", "flash_exp.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "export" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "run" / "samples" / "step_000002.png").is_file()


@pytest.mark.slow
def test_the_exported_student_loads_into_the_diffusers_inpainting_pipeline(tmp_path, task_dirs, shape_shards,
                                                                            face_shards):
    from diffusers import StableDiffusionInpaintPipeline

    from flash_exp.train import train

    cfg = case_cfg("inpainting", "sd15", task_dirs, shape_shards, face_shards, *train_overrides("trainer.max_steps=1"))
    export = train(cfg, tmp_path / "run")
    pipe = StableDiffusionInpaintPipeline.from_pretrained(task_dirs("sd_inpainting"), safety_checker=None)
    pipe.load_lora_weights(str(export))
    pipe.set_progress_bar_config(disable=True)
    image = torch.zeros(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    out = pipe("a red circle", image=image, mask_image=mask, num_inference_steps=1, guidance_scale=0.0,
               height=32, width=32, output_type="pt").images
    assert out.shape == (1, 3, 32, 32)


# ------------------------------------------------------------------------------------ toy world (slow)
def toy_world_built() -> bool:
    from flash_exp.config import toy_paths

    return (toy_paths.ASSETS / "teacher" / "model_index.json").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not toy_world_built(), reason="the toy world is not built (make toyworld)")
def test_the_toy_task_builder_runs_quick(tmp_path):
    """``python -m flash_exp.toyworld.tasks --quick`` on a copy of the toy world's teacher and a few shards."""
    import shutil

    from flash_exp.config import toy_paths
    from flash_exp.data.shard_writer import write_shards
    from flash_exp.toyworld.shapes import iter_samples
    from flash_exp.toyworld.tasks import build

    root = tmp_path / "world"
    shutil.copytree(toy_paths.ASSETS / "teacher", root / "teacher")
    write_shards(iter_samples(0, "train", 32), str(root / "data" / "train-%06d.tar.gz"), 32)
    write_shards(iter_samples(0, "heldout", 8), str(root / "data" / "heldout-%06d.tar.gz"), 8)
    record = build(root, quick=True)
    for task in ("inpainting", "superres", "adapter_canny", "faceswap"):
        assert (root / "tasks" / task / "model_index.json").is_file()
        assert "psnr_unmasked" in record["faceswap"]["teacher_metrics"]
    assert (root / "tasks" / "adapter_canny" / "adapter" / "config.json").is_file()
    assert (root / "tasks" / "faceswap" / "image_encoder" / "config.json").is_file()


TOY_MARGINS = {  # the condition score of the student at 2 NFE must beat that of an image that ignores the
    # condition (the ground truth of another held-out sample) by this much: "it follows the condition"
    "inpainting": ("psnr_unmasked", 4.0),
    "superres": ("psnr_lowres_consistency", 4.0),
    "adapter_canny": ("edge_f1", 0.1),
    "faceswap": ("psnr_unmasked", 4.0),
}


def toy_tasks_built() -> bool:
    from flash_exp.config import toy_paths

    return all((toy_paths.TASK_ASSETS / t / "model_index.json").is_file() for t in toy_paths.TOY_TASKS)


@pytest.mark.slow
@pytest.mark.skipif(not toy_tasks_built(), reason="the toy task teachers are not built "
                                                  "(python -m flash_exp.toyworld.tasks)")
@pytest.mark.parametrize("task", sorted(TOY_MARGINS))
def test_the_toy_student_follows_its_condition(task, tmp_path):
    from flash_exp.tasks import build_task
    from flash_exp.train import train
    from flash_exp.training.conditions import grid_conditions

    cfg = validate(compose(["backbone=toy", f"task={task}", "phases.iterations=[10,10,10,10]", "trainer.max_steps=40",
                            "trainer.sample_every=0", "trainer.checkpoint_every=1000", "trainer.accelerator=cpu",
                            "trainer.sample_nfe=[1,2]", "backbone.teacher_sampling.steps=10", "data.batch_size=8",
                            "task.num_grid_samples=8"]))
    train(cfg, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "samples" / "step_000040.json").read_text())
    key, margin = TOY_MARGINS[task]
    batch = grid_conditions(cfg)  # the grid's conditions
    ignoring = build_task(cfg.task).condition_metrics((batch["pixels"].roll(1, 0) + 1) / 2, batch)[key]
    assert record["scores"]["student 2 NFE"][key] >= ignoring + margin, (ignoring, record["scores"])


# ------------------------------------------------------------------------------------ evaluation (slow)
@pytest.mark.slow
def test_the_evaluation_scores_a_task_run_with_restoration_metrics_beside_fid(tmp_path, monkeypatch, task_dirs,
                                                                              shape_shards, face_shards,
                                                                              toy_clip_dir, toy_shards):
    """An inpainting run evaluated on the toy benchmark: FID, CLIP and PSNR / SSIM / LPIPS (null: no VGG
    weights here) in one result JSON, the PSNR that of the written images, and restoration columns in
    the leaderboard."""
    from omegaconf import OmegaConf
    from PIL import Image

    from flash_exp.evaluation import EvaluateConfig, evaluate
    from flash_exp.leaderboard import build_tables, render_markdown
    from flash_exp.leaderboard.cells import restoration_columns
    from flash_exp.metrics.restoration import psnr
    from flash_exp.metrics.results import iter_results, read_json, result_path
    from flash_exp.train import train
    from tests.fixtures_eval import compose_evaluate

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no VGG16 weights
    run = tmp_path / "runs" / "inpainting" / "run"
    cfg = case_cfg("inpainting", "sd15", task_dirs, shape_shards, face_shards, *train_overrides("trainer.max_steps=1"))
    train(cfg, run)
    OmegaConf.save(OmegaConf.structured(cfg), run / ".hydra" / "config.yaml")
    settings = OmegaConf.to_object(compose_evaluate([
        f"run_dir={run}", "student_nfe=[1]", "teacher_nfe=[1]", "teacher_full=false", f"cache_dir={tmp_path / 'cache'}",
        "device=cpu", "batch_size=3", "eval=toy", f"toy_clip_dir={toy_clip_dir}", "+eval.options.toy.num_images=5",
        f"+eval.options.toy.toy.shards=[{','.join(toy_shards)}]"]))
    assert isinstance(settings, EvaluateConfig) and evaluate(settings) == 0

    student, teacher = (read_json(result_path(run, "toy", n)) for n in ("student_nfe1", "teacher_nfe1"))
    for r in (student, teacher):
        assert r["task"] == "inpainting" and r["num_images"] == 5 and r["fid"] >= 0.0 and -1 <= r["clip_score"] <= 1
        assert set(r["restoration"]) == {"psnr", "ssim", "lpips", "psnr_masked", "psnr_unmasked"} and r["restoration"]["lpips"] is None
        assert "vgg16" in r["lpips_note"] and r["spec"]["protocol"]["task"] == "inpainting"
        assert r["kid"] is not None and r["recall"] is None  # 5 images: precision/recall need more than k = 5
        assert len(r["draws"]) == 1 and r["fid_std"] is None and len(r["gallery"]) == 5
    assert student["protocol_hash"] == teacher["protocol_hash"] and student["spec_hash"] != teacher["spec_hash"]

    def load(directory: Path) -> torch.Tensor:
        files = sorted(directory.glob("*.png"))
        return torch.stack([torch.from_numpy(__import__("numpy").asarray(Image.open(f))).permute(2, 0, 1)
                            for f in files]).float() / 255

    outputs, truth = load(run / "eval" / "toy" / "student_nfe1" / "draw0"), load(run / "eval" / "toy" / "ground_truth")
    assert outputs.shape == truth.shape == (5, 3, 32, 32)
    # mean over the 3 + 2 images of the two batches = mean over the five (PNG rounding: < 0.1 dB)
    per_image = [psnr(outputs[i : i + 1], truth[i : i + 1]) for i in range(5)]
    assert student["restoration"]["psnr"] == pytest.approx(sum(per_image) / 5, abs=0.1)

    (table,) = [t for t in build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs") if t.benchmark == "toy"]
    assert restoration_columns(table) == ["psnr", "ssim", "lpips", "psnr_masked", "psnr_unmasked"]
    text = render_markdown([table], [], [], tmp_path / "runs")
    assert "| psnr | ssim | lpips | psnr_masked | psnr_unmasked |" in text and "task inpainting, held-out conditions" in text
