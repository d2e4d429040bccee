"""Checks of a config against the teacher's own config files, before any weight loads.

A diffusers pipeline directory describes its models in small JSON files (``vae/config.json``,
``unet/config.json`` or ``transformer/config.json``, ``scheduler/scheduler_config.json``). From them:

- ``backbone.resolution`` must be a multiple of the VAE's downsampling factor times the denoiser's
  (a UNet's downsamplers, a transformer's patch size), and of 8 where the diffusers pipeline of the
  family insists on it; otherwise training runs and the first sample grid fails;
- every ``phases.k`` must be at most the training schedule's ``num_train_timesteps``: more teacher
  steps than training timesteps repeat timesteps and train on NaN;
- the scheduler names must be diffusers scheduler classes;
- ``backbone.lora.targets`` must name layers of the denoiser (peft's rule: a module whose name equals
  or ends with ``.<target>``) that a LoRA can adapt, and ``backbone.discriminator.feature_module``
  (when the discriminator reads features) a module of it: both checked on the denoiser built from its
  ``config.json`` on the meta device, no weights read;
- the discriminator head must fit the features it reads (their side from the same config files and
  ``backbone.resolution``): the official strided heads need maps of at least 16x16 or so;
- the Flash LPIPS distillation loss needs the VGG16 weights file on this machine;
- ``data=folder``: ``data.root`` must hold at least one image with a caption that decodes.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flash_exp.config import ConfigError, TrainConfig

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

PIPELINE_MULTIPLE = {"sd": 8, "sdxl": 8, "pixart": 8, "sd3": 1, "flux": 16}  # the pipelines' own height/width check (FLUX: 2x2 packing of 8x latents)


def _config(directory: Path, *names: str) -> dict[str, Any] | None:
    """The first of ``directory/<name>`` that exists, parsed; None when none does."""
    for name in names:
        path = directory / name
        if path.is_file():
            return json.loads(path.read_text())
    return None


def resolution_multiple(family: str, directory: Path) -> int | None:
    """What ``backbone.resolution`` must be a multiple of, from the pipeline's config files (None when
    they are not there to read)."""
    vae = _config(directory, "vae/config.json")
    denoiser = _config(directory, "unet/config.json", "transformer/config.json")
    if vae is None or denoiser is None:
        return None
    vae_factor = 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    if "patch_size" in denoiser and denoiser["patch_size"]:
        denoiser_factor = int(denoiser["patch_size"])
    else:  # a UNet downsamples once per block but the last
        denoiser_factor = 2 ** (len(denoiser.get("block_out_channels", [0])) - 1)
    return math.lcm(vae_factor * denoiser_factor, PIPELINE_MULTIPLE.get(family, 1))


def check_resolution(cfg: TrainConfig, directory: Path) -> None:
    multiple = resolution_multiple(cfg.backbone.family, directory)
    if multiple and cfg.backbone.resolution % multiple:
        raise ConfigError("backbone.resolution", cfg.backbone.resolution,
                          f"must be a multiple of {multiple} for {directory} (the VAE's downsampling times the "
                          "denoiser's, and the pipeline's own multiple), e.g. "
                          f"{max(multiple, cfg.backbone.resolution // multiple * multiple)}")


def check_k(cfg: TrainConfig, directory: Path) -> None:
    scheduler = _config(directory, "scheduler/scheduler_config.json") or {}
    steps = cfg.backbone.teacher_scheduler.kwargs.get("num_train_timesteps", scheduler.get("num_train_timesteps"))
    if steps is None:
        return
    for i, k in enumerate(cfg.phases.k):
        if k > int(steps):
            raise ConfigError(f"phases.k[{i}]", k, f"must be <= the training schedule's {steps} timesteps "
                                                   f"(num_train_timesteps of {directory}/scheduler)")


def scheduler_names(cfg: TrainConfig) -> dict[str, str]:
    b = cfg.backbone
    return {"backbone.teacher_scheduler.name": b.teacher_scheduler.name,
            "backbone.student_scheduler.name": b.student_scheduler.name,
            "backbone.teacher_sampling.scheduler.name": b.teacher_sampling.scheduler.name}


def check_scheduler_names(cfg: TrainConfig) -> None:
    import diffusers  # a lazy module: listing its names imports no scheduler

    known = sorted(name for name in dir(diffusers) if name.endswith("Scheduler"))
    for key, name in scheduler_names(cfg).items():
        if name not in known:
            raise ConfigError(key, name, f"not a diffusers scheduler; allowed: {', '.join(known)}")


def check_lpips_weights(cfg: TrainConfig) -> None:
    if cfg.method.name != "flash" or cfg.loss.distill.type != "lpips":
        return
    from flash_exp.metrics.restoration import lpips_weights_path

    path = lpips_weights_path(cfg.loss.distill.lpips_weights)
    if not path.is_file():
        raise ConfigError("loss.distill.lpips_weights", str(path),
                          "loss.distill.type=lpips needs the torchvision VGG16 ImageNet weights in this file, "
                          "which does not exist (no network here): copy vgg16-397923af.pth there, pass "
                          "loss.distill.lpips_weights=<file>, or use loss.distill.type=l2")


def denoiser_on_meta(directory: Path) -> nn.Module | None:
    """The pipeline's UNet or transformer built from its ``config.json`` with its parameters on the meta
    device (no weights; None when ``model_index.json`` or the config does not say which diffusers class it is)."""
    index = _config(directory, "model_index.json") or {}
    for subfolder in ("unet", "transformer"):
        entry, config = index.get(subfolder), _config(directory, f"{subfolder}/config.json")
        if entry and config is not None:
            break
    else:
        return None
    import diffusers
    from accelerate import init_empty_weights

    cls = getattr(diffusers, str(entry[-1]), None)
    if cls is None:
        return None
    with init_empty_weights():
        return cls.from_config(config)


def _examples(wanted: str, names: list[str], count: int = 8) -> str:
    close = difflib.get_close_matches(wanted, names, n=count, cutoff=0.5)
    return ", ".join(close or names[:count])


def check_lora_targets(cfg: TrainConfig, denoiser: nn.Module) -> None:
    """Each target by peft's own matching rule; then the student's LoRA injected as training does it.

    A target that matches nothing while others do is what peft ignores: a warning, not an error (the
    published PixArt and SD3 adapters list ``proj_in``, which neither transformer has)."""
    import dataclasses

    from peft import inject_adapter_in_model  # what diffusers' add_adapter and peft's get_peft_model call
    from peft.tuners.tuners_utils import check_target_module_exists
    from torch import nn

    from flash_exp.backbones.common import peft_lora_config

    key, targets = "backbone.lora.targets", list(cfg.backbone.lora.targets)
    config = peft_lora_config(cfg.backbone)
    modules = dict(denoiser.named_modules())
    adaptable = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding, nn.MultiheadAttention)
    layers = sorted({".".join(n.split(".")[-2:]) if n.split(".")[-1].isdigit() else n.split(".")[-1]
                     for n, m in modules.items() if isinstance(m, adaptable)})
    hits = {}
    for t in targets:
        single = dataclasses.replace(config, target_modules=[t])
        hits[t] = [n for n in modules if n and check_target_module_exists(single, n)]
    unknown = [t for t in targets if not hits[t]]
    name = type(denoiser).__name__
    if targets and len(unknown) == len(targets):
        raise ConfigError(key, targets, f"no module of the teacher's {name} matches "
                                        f"{', '.join(unknown)}; its layers are e.g. {_examples(unknown[0], layers)}")
    if unknown:
        log.warning("%s: no module of the teacher's %s matches %s; peft ignores it (its layers are e.g. %s)",
                    key, name, ", ".join(unknown), _examples(unknown[0], layers))
    for t in targets:
        whole = [n for n in hits[t] if not isinstance(modules[n], adaptable) and list(modules[n].children())]
        if whole:
            raise ConfigError(key, targets, f"{t!r} matches {whole[0]} ({type(modules[whole[0]]).__name__}), "
                                            "not a layer a LoRA adapts (linear, convolution, embedding); "
                                            f"its layers are e.g. {_examples(t, layers)}")
    try:
        inject_adapter_in_model(config, denoiser)
    except ValueError as err:
        raise ConfigError(key, targets, f"peft cannot adapt the teacher's {name}: {str(err).splitlines()[0]}") from err


def uses_discriminator(cfg: TrainConfig) -> bool:
    """Whether the method trains a discriminator head (Flash's adversarial term, DMD2's GAN classifier)."""
    if cfg.method.name == "flash":
        return cfg.loss.adversarial.enabled
    return cfg.method.name == "dmd2" and cfg.method.dmd2_settings().gan


def uses_feature_module(cfg: TrainConfig) -> bool:
    """Whether a discriminator head reads ``backbone.discriminator.feature_module``'s output."""
    return cfg.backbone.discriminator.input == "features" and uses_discriminator(cfg)


def discriminator_feature_shape(cfg: TrainConfig, directory: Path) -> tuple[int, int] | None:
    """(channels, side) of what the discriminator head reads at ``backbone.resolution``, from the pipeline's
    config files as the backbones compute it (None when they are not there to read): the latents with
    ``discriminator.input=output``; else a UNet's mid block (its last width, the latents downsampled once
    per block but the last) or a transformer block (heads x head dim, the latents over the patch size)."""
    vae = _config(directory, "vae/config.json")
    denoiser = _config(directory, "unet/config.json", "transformer/config.json")
    if vae is None or denoiser is None:
        return None
    latent = cfg.backbone.resolution // 2 ** (len(vae.get("block_out_channels", [0])) - 1)
    if cfg.backbone.discriminator.input == "output":
        return int(vae.get("latent_channels", 4)), latent
    if denoiser.get("patch_size"):
        return int(denoiser["num_attention_heads"]) * int(denoiser["attention_head_dim"]), latent // int(
            denoiser["patch_size"])
    widths = list(denoiser.get("block_out_channels", []))
    return (int(widths[-1]), latent // 2 ** (len(widths) - 1)) if widths else None


def check_discriminator_fits(cfg: TrainConfig, directory: Path) -> None:
    from flash_exp.method.discriminator import logit_side

    shape = discriminator_feature_shape(cfg, directory)
    d = cfg.backbone.discriminator
    if shape is None or d.head == "generic":
        return
    channels, side = shape
    if logit_side(d.head, channels, side, list(d.channels)) < 1:
        source = d.feature_module if d.input == "features" else "the teacher's output"
        raise ConfigError("backbone.discriminator.head", d.head,
                          f"with channels {list(d.channels)} needs features larger than the {side}x{side} of "
                          f"{source} at backbone.resolution={cfg.backbone.resolution}; use "
                          "backbone.discriminator.head=generic, which adapts its strides to small maps")


def check_data_root(cfg: TrainConfig) -> None:
    """``data=folder``: at least one image under ``data.root`` has a caption and decodes (the images are
    read until the first that does)."""
    if cfg.data.kind != "folder":
        return
    from collections import Counter

    from flash_exp.data.folder import record_sample, scan_folder

    try:
        records = scan_folder(cfg.data.root)
    except FileNotFoundError as err:
        raise ConfigError("data.root", cfg.data.root, str(err).rpartition("' ")[2]) from None
    reasons: Counter[str] = Counter()
    for record in records:
        sample, reason = record_sample(record, cfg.data.caption_key)
        if sample is not None:
            return
        reasons[reason.split(" (", 1)[0]] += 1
    found = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    raise ConfigError("data.root", cfg.data.root, f"no usable image among its {len(records)} ({found}): each "
                                                  "needs a caption (README \"Your own data\") and must decode")


def check_feature_module(cfg: TrainConfig, denoiser: nn.Module) -> None:
    wanted = cfg.backbone.discriminator.feature_module
    modules = [n for n, _ in denoiser.named_modules() if n]
    if wanted not in modules:
        blocks = [n for n in modules if n.count(".") <= 1 and not n.split(".")[-1].startswith(("norm", "conv"))]
        raise ConfigError("backbone.discriminator.feature_module", wanted,
                          f"no such module in the teacher's {type(denoiser).__name__}; its blocks are e.g. "
                          f"{_examples(wanted, blocks)}")


def check_against_pretrained(cfg: TrainConfig, directory: Path | str) -> None:
    """Every check of this module; raises :class:`ConfigError` naming the key."""
    directory = Path(directory)
    check_data_root(cfg)
    check_lpips_weights(cfg)
    check_resolution(cfg, directory)
    check_k(cfg, directory)
    check_scheduler_names(cfg)
    if uses_discriminator(cfg):
        check_discriminator_fits(cfg, directory)
    denoiser = denoiser_on_meta(directory)
    if denoiser is not None:
        if uses_feature_module(cfg):
            check_feature_module(cfg, denoiser)
        check_lora_targets(cfg, denoiser)  # last: it attaches the LoRA
