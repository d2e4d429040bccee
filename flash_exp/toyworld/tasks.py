"""Build the toy conditional teachers: the toy world's inpainting, super-resolution, canny-adapter and
face-swap teachers, trained here on a CPU from the toy teacher.

``python -m flash_exp.toyworld.tasks [--root DIR] [--only inpainting,superres,adapter_canny,faceswap]
[--quick] [--seed 0]``

Needs the toy world (``python -m flash_exp.toyworld``: data, VAE, teacher) under ``--root`` and writes
``<root>/tasks/`` (see :mod:`flash_exp.toyworld.task_assets`). Every teacher is a self-contained
diffusers directory (its own copy of the toy VAE, text encoder and tokenizer), so it keeps working
with the toy backbone's code path (``backbone=toy task=<task>``):

* ``inpainting``: ``StableDiffusionInpaintPipeline``; the toy UNet with ``conv_in`` widened to 9
  channels (new weights zero, so training starts from the text-to-image teacher) fine-tuned on random
  box / stroke masks (10 % full masks, 10 % empty captions for CFG);
* ``superres``: ``StableDiffusionUpscalePipeline``; 7 input channels and a 1000-class noise-level
  embedding (zero-initialised), fine-tuned on x4-downscaled images at noise levels 0..100;
* ``adapter_canny``: ``StableDiffusionAdapterPipeline``: the toy teacher unchanged (frozen) and a
  diffusers ``T2IAdapter`` trained on Canny edges (``adapter/``);
* ``faceswap``: synthetic faces (``faces/``, :mod:`flash_exp.toyworld.faces`) and an inpainting UNet
  (from the inpainting teacher) trained jointly with a tiny CLIP image encoder (``image_encoder/``) and
  its identity-token projection (``image_projection/``).

``tasks.json`` records each teacher's build time, steps, and its PSNR / SSIM (and condition metrics)
on held-out conditions at the toy sampling budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    StableDiffusionAdapterPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionUpscalePipeline,
    T2IAdapter,
    UNet2DConditionModel,
)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection

from flash_exp.config import CannyConfig, MaskConfig
from flash_exp.data.shard_writer import write_shards
from flash_exp.toyworld import assets, task_assets
from flash_exp.toyworld.dataset import ToyData, load_shards
from flash_exp.toyworld.faces import iter_face_samples
from flash_exp.toyworld.teacher import (
    MAX_TOKENS,
    SD_NOISE_SCHEDULE,
    encode_posteriors,
    save_pipeline,
    training_scheduler,
)

STAGES = task_assets.TASKS
FACE_SHARD_SIZE = 4000
CANNY = CannyConfig(low_threshold=20.0, high_threshold=60.0, blur_sigma=0.0, detect_resolution=None)
"""The toy canny settings (conf/task_backbone/adapter_canny_toy.yaml): 32 px flat shapes have weak
gradients at OpenCV's 100 / 200, so the toy uses 20 / 60 without blur."""


@dataclass(frozen=True)
class TaskBuildSettings:
    """Steps per teacher (batches of ``batch_size``), face split sizes and the evaluation size."""

    inpainting_steps: int
    superres_steps: int
    adapter_steps: int
    faceswap_steps: int
    batch_size: int
    face_train_count: int
    face_heldout_count: int
    eval_count: int
    eval_steps: int


FULL = TaskBuildSettings(inpainting_steps=1500, superres_steps=1200, adapter_steps=1200, faceswap_steps=1500,
                         batch_size=32, face_train_count=6000, face_heldout_count=200, eval_count=32, eval_steps=25)
QUICK = TaskBuildSettings(inpainting_steps=2, superres_steps=2, adapter_steps=2, faceswap_steps=2, batch_size=4,
                          face_train_count=16, face_heldout_count=8, eval_count=4, eval_steps=2)


# ------------------------------------------------------------------------------------------ base
@dataclass
class Base:
    """The toy teacher's components (frozen)."""

    vae: AutoencoderKL
    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel


def load_base(root: Path) -> Base:
    teacher = assets.teacher_dir(root)
    vae = AutoencoderKL.from_pretrained(teacher, subfolder="vae").eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(teacher, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(teacher, subfolder="text_encoder").eval().requires_grad_(False)
    unet = UNet2DConditionModel.from_pretrained(teacher, subfolder="unet").eval().requires_grad_(False)
    return Base(vae, tokenizer, text_encoder, unet)


class TextTable:
    """Frozen text-encoder states of a fixed set of captions (and of the empty prompt), looked up by index."""

    def __init__(self, base: Base, captions: list[str]):
        self.captions = sorted(set(captions))
        self.index = {c: i for i, c in enumerate(self.captions)}
        with torch.no_grad():
            ids = base.tokenizer(self.captions + [""], padding="max_length", max_length=MAX_TOKENS,
                                 truncation=True, return_tensors="pt").input_ids
            self.states = torch.cat([base.text_encoder(chunk)[0] for chunk in ids.split(256)])

    def lookup(self, captions: list[str], drop: torch.Tensor) -> torch.Tensor:
        rows = torch.tensor([self.index[c] for c in captions])
        rows = torch.where(drop, torch.full_like(rows, len(self.captions)), rows)
        return self.states[rows]


def widen_unet(unet: UNet2DConditionModel, extra_channels: int, **config) -> UNet2DConditionModel:
    """A copy of ``unet`` with ``extra_channels`` more input channels (zero weights) and ``config``
    changes (e.g. ``num_class_embeds``; a new class embedding starts at zero)."""
    new = UNet2DConditionModel.from_config({**dict(unet.config), "in_channels": unet.config.in_channels + extra_channels,
                                            **config})
    state = unet.state_dict()
    weight = state.pop("conv_in.weight")
    missing, unexpected = new.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    with torch.no_grad():
        new.conv_in.weight.zero_()
        new.conv_in.weight[:, : weight.shape[1]] = weight
        if new.class_embedding is not None:
            for p in new.class_embedding.parameters():
                p.zero_()
    return new


_LATENTS: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def latent_table(vae: AutoencoderKL, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image (unscaled), computed once per (VAE, image set)."""
    key = (id(vae), id(pixels) if not isinstance(pixels, ToyData) else id(pixels.images))
    if key not in _LATENTS:
        _LATENTS.clear()
        _LATENTS[key] = encode_posteriors(vae, pixels.pixels(torch.arange(len(pixels)))
                                          if isinstance(pixels, ToyData) else pixels)
    return _LATENTS[key]


def encode_mode(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.mode() * vae.config.scaling_factor


def diffusion_loss(unet: UNet2DConditionModel, latents: torch.Tensor, concat: torch.Tensor | None,
                   states: torch.Tensor, generator: torch.Generator, snr_gamma: float = 5.0,
                   cubic_timesteps: bool = False, **unet_kwargs) -> torch.Tensor:
    """Epsilon MSE with min-SNR weighting (as the toy teacher) on [x_t, concat]. ``cubic_timesteps``:
    t = (1 - u^3) T, most draws at high noise where the layout is decided (the T2I-Adapter recipe)."""
    scheduler = _SCHEDULER
    noise = torch.randn(latents.shape, generator=generator)
    steps = scheduler.config.num_train_timesteps
    if cubic_timesteps:
        u = torch.rand(latents.shape[0], generator=generator)
        t = ((1 - u**3) * steps).long().clamp(max=steps - 1)
    else:
        t = torch.randint(steps, (latents.shape[0],), generator=generator)
    noisy = scheduler.add_noise(latents, noise, t)
    x = noisy if concat is None else torch.cat([noisy, concat], dim=1)
    prediction = unet(x, t, states, **unet_kwargs).sample
    snr = compute_snr(scheduler, t)
    weights = snr.clamp(max=snr_gamma) / snr
    return (F.mse_loss(prediction, noise, reduction="none").mean(dim=(1, 2, 3)) * weights).mean()


_SCHEDULER = training_scheduler()


def fit(groups: list[tuple[list[torch.nn.Parameter], float]], loss_fn: Callable[[torch.Generator], torch.Tensor],
        steps: int, seed: int, desc: str, ema_decay: float = 0.99) -> None:
    """AdamW over (parameters, learning rate) groups + cosine schedule + EMA (copied into the parameters
    at the end), gradient clipping at 1."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for group, _ in groups for p in group]
    optimizer = torch.optim.AdamW([{"params": g, "lr": lr} for g, lr in groups], weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=min(50, steps // 10),
                                               num_training_steps=max(1, steps))
    ema = EMAModel(params, decay=ema_decay)
    progress = tqdm(range(steps), desc=desc, unit="step", mininterval=10)
    for _ in progress:
        loss = loss_fn(generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        ema.step(params)
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    ema.copy_to(params)


FINE_TUNE_LR = 2e-4  # pretrained weights: small steps, or Adam's first updates wreck the teacher
NEW_LR = 2e-3  # new inputs (widened conv_in, class embedding), adapter, identity encoder


def unet_groups(unet: UNet2DConditionModel, new_prefixes: tuple[str, ...]) -> list[tuple[list, float]]:
    """The UNet's pretrained weights at FINE_TUNE_LR, those under ``new_prefixes`` at NEW_LR."""
    new = [p for n, p in unet.named_parameters() if n.startswith(new_prefixes)]
    old = [p for n, p in unet.named_parameters() if not n.startswith(new_prefixes)]
    return [(old, FINE_TUNE_LR), (new, NEW_LR)]


def _sampling_scheduler() -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(**SD_NOISE_SCHEDULE)


def _draw(data: ToyData, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(len(data), (batch,), generator=generator)


# ------------------------------------------------------------------------------------------ teachers
def build_inpainting(base: Base, data: ToyData, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.inpainting import draw_mask, masked_pixels

    torch.manual_seed(seed)
    unet = widen_unet(base.unet, 1 + base.vae.config.latent_channels).train()
    text = TextTable(base, data.captions)
    mean, _ = latent_table(base.vae, data)
    scale = base.vae.config.scaling_factor
    mask_cfg = MaskConfig()

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = _draw(data, settings.batch_size, g)
        pixels = data.pixels(index)
        latents = mean[index] * scale
        masks = torch.stack([draw_mask(mask_cfg, pixels.shape[-1], g) for _ in index])
        full = torch.rand(len(index), generator=g) < 0.1
        masks[full] = 1.0
        concat = torch.cat([F.interpolate(masks, size=latents.shape[-2:]),
                            encode_mode(base.vae, masked_pixels(pixels, masks))], dim=1)
        states = text.lookup([data.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        return diffusion_loss(unet, latents, concat, states, g)

    fit(unet_groups(unet, ("conv_in",)), loss_fn, settings.inpainting_steps, seed, "toy inpainting teacher")
    pipe = StableDiffusionInpaintPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet.eval(),
        scheduler=_sampling_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    save_pipeline(pipe, out / "inpainting")


def build_superres(base: Base, data: ToyData, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.filters import resize
    from flash_exp.tasks.superres import noise_augment

    torch.manual_seed(seed)
    unet = widen_unet(base.unet, 3, num_class_embeds=1000).train()
    text = TextTable(base, data.captions)
    pixels_all = data.pixels(torch.arange(len(data)))
    mean, _ = latent_table(base.vae, data)
    scale = base.vae.config.scaling_factor
    lowres = torch.cat([resize(chunk, pixels_all.shape[-1] // 4) for chunk in pixels_all.split(1024)]).clamp(-1, 1)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = _draw(data, settings.batch_size, g)
        latents = mean[index] * scale
        low = resize(lowres[index], tuple(latents.shape[-2:])).clamp(-1, 1)
        level = torch.randint(0, 101, (len(index),), generator=g)
        concat = noise_augment(low, torch.randn(low.shape, generator=g), level)
        states = text.lookup([data.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        return diffusion_loss(unet, latents, concat, states, g, class_labels=level)

    fit(unet_groups(unet, ("conv_in", "class_embedding")), loss_fn, settings.superres_steps, seed,
        "toy super-resolution teacher")
    pipe = StableDiffusionUpscalePipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet.eval(),
        low_res_scheduler=DDPMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear"),
        scheduler=_sampling_scheduler(), max_noise_level=350)
    save_pipeline(pipe, out / "superres")


def toy_adapter(unet: UNet2DConditionModel, vae_factor: int) -> T2IAdapter:
    """A T2IAdapter whose residuals fit ``unet``: the toy UNet (a plain first down block, then cross-
    attention blocks: SDXL's layout) takes [C0 after the first downsampling, C1 at the same size, C2 one
    level down, ...], which is diffusers' ``full_adapter_xl`` (for the toy at 32 px: [32 @ 8, 64 @ 8, 64 @ 4])."""
    return T2IAdapter(in_channels=1, channels=list(unet.config.block_out_channels), num_res_blocks=2,
                      downscale_factor=2 * vae_factor, adapter_type="full_adapter_xl")


def build_adapter_canny(base: Base, data: ToyData, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.canny import canny

    torch.manual_seed(seed)
    vae_factor = 2 ** (len(base.vae.config.block_out_channels) - 1)
    adapter = toy_adapter(base.unet, vae_factor).train()
    text = TextTable(base, data.captions)
    pixels_all = data.pixels(torch.arange(len(data)))
    mean, _ = latent_table(base.vae, data)
    scale = base.vae.config.scaling_factor
    edges = torch.cat([canny(chunk, CANNY.low_threshold, CANNY.high_threshold, CANNY.blur_sigma)
                       for chunk in pixels_all.split(1024)])

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = _draw(data, settings.batch_size, g)
        latents = mean[index] * scale
        states = text.lookup([data.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        residuals = adapter(edges[index])
        return diffusion_loss(base.unet, latents, None, states, g, cubic_timesteps=True,
                              down_intrablock_additional_residuals=residuals)

    fit([(list(adapter.parameters()), 1e-3)], loss_fn, settings.adapter_steps, seed, "toy canny adapter")
    pipe = StableDiffusionAdapterPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
        adapter=adapter.eval(), scheduler=_sampling_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    save_pipeline(pipe, out / "adapter_canny")


@dataclass
class FaceData:
    targets: torch.Tensor  # (N, 3, 32, 32) in [-1, 1]
    references: torch.Tensor
    masks: torch.Tensor  # (N, 1, 32, 32)
    captions: list[str]


def build_faces(out: Path, settings: TaskBuildSettings, seed: int) -> None:
    directory = out / "faces"
    for split, count in (("train", settings.face_train_count), ("heldout", settings.face_heldout_count)):
        for old in directory.glob(f"{split}-*{assets.SHARD_SUFFIX}"):
            old.unlink()
        write_shards(iter_face_samples(seed, split, count), str(directory / f"{split}-%06d{assets.SHARD_SUFFIX}"),
                     FACE_SHARD_SIZE)


def load_faces(shards: list[str], margin: float = 0.1) -> FaceData:
    import webdataset as wds

    from flash_exp.tasks.faceswap import box_mask

    rows = wds.WebDataset(shards, shardshuffle=False).decode("torchrgb").to_tuple("jpg", "ref.jpg", "json")
    targets, refs, masks, captions = [], [], [], []
    for target, ref, meta in rows:
        targets.append(target * 2 - 1)
        refs.append(ref * 2 - 1)
        masks.append(box_mask(meta["face_box"], target.shape[-1], margin))
        captions.append(meta["caption"])
    return FaceData(torch.stack(targets), torch.stack(refs), torch.stack(masks), captions)


def toy_image_encoder() -> CLIPVisionModelWithProjection:
    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        image_size=32, patch_size=4, hidden_size=64, intermediate_size=128, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=64))


def build_faceswap(base: Base, out: Path, settings: TaskBuildSettings, seed: int) -> None:
    from flash_exp.tasks.faceswap import CLIP_MEAN, CLIP_STD, ENCODER_DIR, PROJECTION_DIR, IdentityProjection
    from flash_exp.tasks.inpainting import masked_pixels

    torch.manual_seed(seed)
    build_faces(out, settings, seed)
    faces = load_faces(task_assets.faces_shards("train", out))
    inpainting = out / "inpainting" / "unet"
    if inpainting.is_dir():  # start from the inpainting teacher: it already fills holes
        unet = UNet2DConditionModel.from_pretrained(inpainting)
    else:
        unet = widen_unet(base.unet, 1 + base.vae.config.latent_channels)
    unet.train()
    encoder = toy_image_encoder().train()
    width = base.text_encoder.config.hidden_size
    projection = IdentityProjection(encoder.config.projection_dim, width, 4).train()
    text = TextTable(base, faces.captions)
    mean, _ = latent_table(base.vae, faces.targets)
    scale = base.vae.config.scaling_factor
    clip_mean, clip_std = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def loss_fn(g: torch.Generator) -> torch.Tensor:
        index = torch.randint(len(faces.captions), (settings.batch_size,), generator=g)
        latents = mean[index] * scale
        masks = faces.masks[index]
        concat = torch.cat([F.interpolate(masks, size=latents.shape[-2:]),
                            encode_mode(base.vae, masked_pixels(faces.targets[index], masks))], dim=1)
        embeds = encoder(pixel_values=((faces.references[index] + 1) / 2 - clip_mean) / clip_std).image_embeds
        embeds = embeds * (torch.rand(len(index), 1, generator=g) >= 0.1)  # identity dropped: zero embedding
        states = text.lookup([faces.captions[i] for i in index], torch.rand(len(index), generator=g) < 0.1)
        states = torch.cat([states, projection(embeds)], dim=1)
        return diffusion_loss(unet, latents, concat, states, g)

    groups = unet_groups(unet, () if inpainting.is_dir() else ("conv_in",))
    groups.append((list(encoder.parameters()) + list(projection.parameters()), 1e-3))
    fit(groups, loss_fn, settings.faceswap_steps, seed, "toy face-swap teacher")
    target = out / "faceswap"
    save_pipeline(StableDiffusionInpaintPipeline(
        vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet.eval(),
        scheduler=_sampling_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ), target)
    encoder.eval().save_pretrained(target / ENCODER_DIR, safe_serialization=True)
    projection.eval().save_pretrained(target / PROJECTION_DIR)


# ------------------------------------------------------------------------------------------ evaluation


def toy_task_config(task: str, root: Path, out: Path, *overrides: str):
    """The training config of ``backbone=toy task=<task>`` with the teacher built under ``out`` and the
    toy world under ``root`` (composed as ``python -m flash_exp.train`` would)."""
    from flash_exp.config import compose_train_config

    def listed(paths: list[str]) -> str:
        return "[" + ",".join(paths) + "]"

    if task == "faceswap":
        train, heldout = task_assets.faces_shards("train", out), task_assets.faces_shards("heldout", out)
    else:
        train, heldout = assets.train_shards(root), assets.heldout_shards(root)
    items = ["backbone=toy", f"task={task}", f"backbone.pretrained={out / task}", f"data.shards={listed(train)}",
             f"task.grid_shards={listed(heldout)}"]
    if task == "adapter_canny":
        items.append(f"task.adapter.pretrained={out / task}")
    return compose_train_config([*items, *overrides])


def evaluate_teacher(task: str, root: Path, out: Path, settings: TaskBuildSettings, seed: int = 0) -> dict:
    """The teacher at the toy sampling budget (DPM-Solver, CFG 4) on ``eval_count`` held-out conditions:
    PSNR / SSIM against the ground truth and the task's condition metrics."""
    from flash_exp.backbones import build_backbone
    from flash_exp.evaluation.task_runs import evaluate_task
    from flash_exp.tasks import build_task

    cfg = toy_task_config(task, root, out, f"backbone.teacher_sampling.steps={settings.eval_steps}")
    backbone, module = build_backbone(cfg.backbone), build_task(cfg.task)
    result = evaluate_task(backbone, module, cfg, student_nfe=[], count=settings.eval_count, teacher=True,
                           lpips=None, seed=seed)
    return next(iter(result["samplers"].values()))


BUILDERS: dict[str, Callable] = {
    "inpainting": lambda base, data, out, s, seed: build_inpainting(base, data, out, s, seed),
    "superres": lambda base, data, out, s, seed: build_superres(base, data, out, s, seed),
    "adapter_canny": lambda base, data, out, s, seed: build_adapter_canny(base, data, out, s, seed),
    "faceswap": lambda base, data, out, s, seed: build_faceswap(base, out, s, seed),
}


def _update_info(out: Path, task: str, entry: dict) -> None:
    path = out / task_assets.INFO_FILE
    record = json.loads(path.read_text()) if path.exists() else {}
    record[task] = entry
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def build(root: Path = assets.ASSETS, stages: list[str] | tuple[str, ...] = STAGES, quick: bool = False,
          seed: int = 0, evaluate: bool = True, log: Callable[[str], None] = print) -> dict:
    """Build the toy teachers of ``stages`` into ``<root>/tasks``; returns the build record."""
    settings = QUICK if quick else FULL
    out = root / "tasks"
    out.mkdir(parents=True, exist_ok=True)
    base = load_base(root)
    data = load_shards(assets.train_shards(root)) if set(stages) - {"faceswap"} else None
    for stage in STAGES:
        if stage not in stages:
            continue
        start = time.perf_counter()
        if (out / stage).exists():
            shutil.rmtree(out / stage)
        BUILDERS[stage](base, data, out, settings, seed)
        seconds = time.perf_counter() - start
        entry = {"build_seconds": round(seconds, 1), "settings": asdict(settings), "seed": seed}
        log(f"[toyworld.tasks] {stage}: built in {seconds:.1f} s")
        if evaluate:
            start = time.perf_counter()
            metrics = evaluate_teacher(stage, root, out, settings, seed)
            entry["teacher_metrics"] = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            log(f"[toyworld.tasks] {stage}: teacher on {settings.eval_count} held-out conditions "
                f"({time.perf_counter() - start:.1f} s): {entry['teacher_metrics']}")
        _update_info(out, stage, entry)
    return json.loads((out / task_assets.INFO_FILE).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=assets.ASSETS, help="the toy world (default: shipped assets)")
    parser.add_argument("--only", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--quick", action="store_true", help="tiny step counts (tests)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out PSNR / SSIM of each teacher")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    total = time.perf_counter()
    build(args.root, stages, args.quick, args.seed, evaluate=not args.no_eval)
    print(f"[toyworld.tasks] done in {time.perf_counter() - total:.1f} s -> {args.root / 'tasks'}")


__all__ = ["CANNY", "FULL", "QUICK", "STAGES", "TaskBuildSettings", "build", "evaluate_teacher", "load_faces",
           "toy_adapter", "toy_image_encoder", "toy_task_config", "widen_unet"]

if __name__ == "__main__":
    main()
