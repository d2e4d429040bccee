"""The Backbone interface: everything the method may ask of a teacher family, and nothing else.

A backbone owns the frozen components (VAE, text encoders), the denoiser with the student's LoRA
adapter (the teacher is the same module with the adapter disabled, so base weights live once in
memory), the training noise schedule and the samplers. It never computes a loss.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from flash_exp.backbones.condition import Condition
from flash_exp.config import BackboneConfig, SchedulerConfig
from flash_exp.method.noise import NoiseSchedule

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FeaturesReady(Exception):
    """Raised by a feature hook to stop a forward pass once the discriminator features exist."""

    def __init__(self, features: torch.Tensor):
        super().__init__("features ready")
        self.features = features


def resolve_pretrained(name_or_path: str) -> str:
    """A local directory for ``name_or_path``: the directory itself, the local hub cache, or a download.

    Raises FileNotFoundError naming the hub id and how to point at a local directory when the hub
    cannot be reached and nothing is cached.
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    if Path(name_or_path).expanduser().exists():
        raise NotADirectoryError(f"backbone.pretrained={name_or_path!r} exists but is not a directory")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name_or_path, local_files_only=True)
    except Exception:
        pass
    try:
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
        os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")
        return snapshot_download(name_or_path)
    except Exception as err:
        raise FileNotFoundError(
            f"could not load the teacher {name_or_path!r} from the Hugging Face hub "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Without network access, "
            f"download it elsewhere (e.g. `hf download {name_or_path} --local-dir DIR`), copy DIR here and "
            f"pass backbone.pretrained=DIR."
        ) from err


def build_scheduler(sched_cfg: SchedulerConfig, base_config: dict):
    """The diffusers scheduler class named in ``sched_cfg``, from the teacher's scheduler config."""
    import diffusers

    cls = getattr(diffusers, sched_cfg.name, None)
    if cls is None:
        raise ValueError(f"no diffusers scheduler named {sched_cfg.name!r}")
    overrides = dict(sched_cfg.kwargs)
    if "timestep_spacing" in inspect.signature(cls.__init__).parameters:
        overrides["timestep_spacing"] = sched_cfg.timestep_spacing
    return cls.from_config(base_config, **overrides)


class Backbone(nn.Module, abc.ABC):
    """A teacher family behind one interface. Shapes: latents (B, C, h, w); pixels (B, 3, H, W) in [-1, 1]."""

    cfg: BackboneConfig
    denoiser: nn.Module
    schedule: NoiseSchedule

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]
        self._adapter_on = True
        # samples evaluated by the teacher / student denoiser; divided by the batch size B these are
        # "batch-B evaluations" (a 2B CFG call counts 2)
        self.teacher_samples = 0
        self.student_samples = 0

    # ------------------------------------------------------------------ conditions
    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """Text conditioning for a batch of captions (frozen encoders, no gradient)."""

    @abc.abstractmethod
    def null_condition(self, batch_size: int) -> Condition:
        """The unconditional branch of CFG: empty prompt, zero embedding or negative prompt."""

    # ------------------------------------------------------------------ latents
    @abc.abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> scaled latents."""

    @abc.abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels in [-1, 1] (differentiable)."""

    # ------------------------------------------------------------------ denoiser
    @abc.abstractmethod
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Raw denoiser output for model input x (latents with the condition's channels)."""

    @abc.abstractmethod
    def _set_adapter(self, enabled: bool) -> None: ...

    @abc.abstractmethod
    def feature_module(self) -> nn.Module:
        """The teacher block whose output feeds the discriminator head."""

    @abc.abstractmethod
    def feature_shape(self) -> tuple[int, int]:
        """(channels, spatial side) of the discriminator features at the training resolution."""

    @contextlib.contextmanager
    def adapter(self, enabled: bool) -> Iterator[None]:
        """Run the denoiser as the student (LoRA on) or the teacher (LoRA off) inside the block."""
        previous = self._adapter_on
        if previous != enabled:
            self._set_adapter(enabled)
            self._adapter_on = enabled
        try:
            yield
        finally:
            if previous != enabled:
                self._set_adapter(previous)
                self._adapter_on = previous

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Raw output (eps, v or flow velocity) at (x_t, t) of the student or teacher, per :meth:`adapter`."""
        if self._adapter_on:
            self.student_samples += x_t.shape[0]
        else:
            self.teacher_samples += x_t.shape[0]
        x = x_t if cond.concat is None else torch.cat([x_t, cond.concat.to(x_t)], dim=1)
        t = t.reshape(-1).expand(x_t.shape[0]) if t.numel() == 1 else t
        return self._forward_denoiser(x.to(self.dtype), t, cond).to(x_t.dtype)

    def teacher_features(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Teacher (LoRA off) features at :meth:`feature_module` for the discriminator.

        The forward pass stops at that block. Gradients flow to x_t, not to the frozen weights.
        """
        def stop(_module, _inputs, output):
            raise FeaturesReady(output[0] if isinstance(output, tuple) else output)

        handle = self.feature_module().register_forward_hook(stop)
        try:
            with self.adapter(False):
                self.denoise(x_t, t, cond)
        except FeaturesReady as ready:
            return ready.features
        finally:
            handle.remove()
        raise RuntimeError("the feature module did not run during the teacher forward pass")

    # ------------------------------------------------------------------ training
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        from peft.utils import get_peft_model_state_dict

        return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.denoiser).items()}

    # ------------------------------------------------------------------ sampling and export
    @abc.abstractmethod
    def pipeline(self, student: bool):
        """A diffusers pipeline over the shared components: the student (LoRA on, its few-step sampler)
        or the teacher (LoRA off, its own sampler)."""

    @abc.abstractmethod
    def export(self, directory: Path) -> Path:
        """Write the student in the format this family's users load; return the written path."""

    def make_scheduler(self, which: str):
        """A fresh diffusers scheduler: ``teacher`` (K-step targets), ``student`` or ``teacher_sampling``."""
        sched_cfg = {
            "teacher": self.cfg.teacher_scheduler,
            "student": self.cfg.student_scheduler,
            "teacher_sampling": self.cfg.teacher_sampling.scheduler,
        }[which]
        return build_scheduler(sched_cfg, self.base_scheduler_config)

    base_scheduler_config: dict

