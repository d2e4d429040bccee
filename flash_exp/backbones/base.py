"""The Backbone interface: everything the method may ask of a teacher family, and nothing else.

A backbone owns the frozen components (VAE, text encoders), the denoiser with the student's LoRA
adapter (the teacher is the same module with the adapter disabled, so base weights live once in
memory), the training noise schedule and the samplers. It never computes a loss.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from flash_exp.backbones.condition import Condition
from flash_exp.backbones.hub import TeacherNotFoundError, resolve_pretrained  # noqa: F401 (re-exported)
from flash_exp.backbones.noise_schedule import NoiseSchedule
from flash_exp.config import BackboneConfig, SchedulerConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class FeaturesReady(Exception):
    """Raised by a feature hook to stop a forward pass once the discriminator features exist."""

    def __init__(self, features: torch.Tensor):
        super().__init__("features ready")
        self.features = features


def scheduler_overrides(sched_cfg: SchedulerConfig) -> dict:
    """The ``from_config`` arguments that turn the teacher's scheduler config into ``sched_cfg``'s:
    its kwargs, and its ``timestep_spacing`` where the class takes one."""
    import diffusers

    cls = getattr(diffusers, sched_cfg.name, None)
    if cls is None:
        raise ValueError(f"no diffusers scheduler named {sched_cfg.name!r}")
    overrides = dict(sched_cfg.kwargs)
    if "timestep_spacing" in inspect.signature(cls.__init__).parameters:
        overrides["timestep_spacing"] = sched_cfg.timestep_spacing
    return overrides


def applies_boundary_condition(sched_cfg: SchedulerConfig) -> bool:
    """Whether the sampler named in ``sched_cfg`` reads the network through the consistency boundary
    condition c_skip(t) x_t + c_out(t) x0 (``LCMScheduler``, ``TCDScheduler``); a plain sampler such as
    ``FlowMatchEulerDiscreteScheduler`` takes the parametrisation's x0 as it is."""
    import diffusers

    return hasattr(getattr(diffusers, sched_cfg.name), "get_scalings_for_boundary_condition_discrete")


def build_scheduler(sched_cfg: SchedulerConfig, base_config: dict):
    """The diffusers scheduler class named in ``sched_cfg``, from the teacher's scheduler config."""
    import diffusers

    overrides = scheduler_overrides(sched_cfg)
    return getattr(diffusers, sched_cfg.name).from_config(base_config, **overrides)


class Backbone(nn.Module, abc.ABC):
    """A teacher family behind one interface. Shapes: latents (B, C, h, w); pixels (B, 3, H, W) in [-1, 1]."""

    cfg: BackboneConfig
    denoiser: nn.Module
    schedule: NoiseSchedule

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.cfg = cfg
        self.dtype = DTYPES[cfg.dtype]
        self._adapter_on: bool | str = True
        # samples evaluated by the teacher / student denoiser (not by another named adapter); divided
        # by the batch size B these are "batch-B evaluations" (a 2B CFG call counts 2)
        self.teacher_samples = 0
        self.student_samples = 0
        self._compiled_forward = None  # set by compile_teacher
        self._offload_to: torch.device | None = None  # set by offload_frozen
        self._frozen_visits = 0  # open frozen_on_device blocks

    # ------------------------------------------------------------------ conditions
    @abc.abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """Text conditioning for a batch of captions (frozen encoders, no gradient)."""

    @abc.abstractmethod
    def null_condition(self, batch_size: int) -> Condition:
        """The unconditional branch of CFG: empty prompt, zero embedding or negative prompt."""

    # ------------------------------------------------------------------ guidance
    @property
    def embeds_guidance(self) -> bool:
        """Whether the teacher takes its guidance scale as an input (a guidance-distilled model such as
        FLUX.1-dev): the teacher with guidance w is then one call on :meth:`with_guidance`, not CFG."""
        return False

    def with_guidance(self, cond: Condition, guidance: torch.Tensor | float) -> Condition:
        """``cond`` with the guidance input set to ``guidance`` (float or (B,)); see :attr:`embeds_guidance`."""
        raise ValueError(f"backbone family {self.cfg.family!r} has no guidance input; its teacher uses CFG")

    # ------------------------------------------------------------------ task conditioning
    # What a conditional task adds to a text condition, in the family's own denoiser arguments. Extra
    # input channels need nothing here: ``Condition.concat`` is appended to x_t by :meth:`denoise`.
    def extra_input_channels(self) -> int:
        """Input channels of the denoiser beyond the latents: what ``Condition.concat`` must carry."""
        return 0

    def add_context_tokens(self, cond: Condition, tokens: torch.Tensor) -> Condition:
        """``cond`` with ``tokens`` (B, N, D) appended to the cross-attention context (image prompts)."""
        raise ValueError(f"backbone family {self.cfg.family!r} takes no extra context tokens: see task.supported_families")

    def add_adapter_residuals(self, cond: Condition, residuals: list[torch.Tensor]) -> Condition:
        """``cond`` with T2I-Adapter residuals (one (B, C_i, h_i, w_i) tensor per down block)."""
        raise ValueError(f"backbone family {self.cfg.family!r} takes no T2I-Adapter residuals: see task.supported_families")

    def add_class_labels(self, cond: Condition, labels: torch.Tensor) -> Condition:
        """``cond`` with class labels (B,) for the denoiser's class embedding (e.g. the x4 upscaler's
        noise level)."""
        raise ValueError(f"backbone family {self.cfg.family!r} takes no class labels: see task.supported_families")

    # ------------------------------------------------------------------ latents
    @abc.abstractmethod
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> scaled latents."""

    @abc.abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels in [-1, 1] (differentiable)."""

    # ------------------------------------------------------------------ memory
    @abc.abstractmethod
    def frozen_modules(self) -> list[nn.Module]:
        """The frozen encoders that :meth:`offload_frozen` keeps in CPU memory between encodes."""

    def offload_frozen(self, device: torch.device) -> None:
        """Keep :meth:`frozen_modules` on the CPU; they visit ``device`` only inside :meth:`frozen_on_device`."""
        self._offload_to = device
        for module in self.frozen_modules():
            module.to("cpu")

    @contextlib.contextmanager
    def frozen_on_device(self) -> Iterator[None]:
        """Inside the block the offloaded encoders are on the compute device; a no-op without offload.
        Blocks nest (a task's ``prepare`` inside a sample grid's): only the outermost moves weights."""
        if self._offload_to is None or self._frozen_visits > 0:
            yield
            return
        for module in self.frozen_modules():
            module.to(self._offload_to)
        self._frozen_visits += 1
        try:
            yield
        finally:
            self._frozen_visits -= 1
            for module in self.frozen_modules():
                module.to("cpu")

    def compile_teacher(self) -> None:
        """Run the teacher's calls without gradients (the K-step rollout, the DMD real score) through
        ``torch.compile``; the student and the teacher's feature pass with gradients stay eager."""
        self._compiled_forward = torch.compile(self._forward_denoiser)

    # ------------------------------------------------------------------ denoiser
    @abc.abstractmethod
    def _forward_denoiser(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Raw denoiser output for model input x (latents with the condition's channels)."""

    @abc.abstractmethod
    def _set_adapter(self, enabled: bool | str) -> None: ...

    def add_named_adapter(self, name: str) -> list[nn.Parameter]:
        """A second LoRA on the same base (same rank and targets, zero-initialised up-projection, so it
        starts as the teacher), selected with ``adapter(name)``; returns its parameters."""
        raise ValueError(f"backbone family {self.cfg.family!r} has no named adapters")

    @abc.abstractmethod
    def feature_module(self) -> nn.Module:
        """The teacher block whose output feeds the discriminator head."""

    @abc.abstractmethod
    def feature_shape(self) -> tuple[int, int]:
        """(channels, spatial side) of the discriminator input at the training resolution: the
        ``feature_module``'s output, or the latents' shape with ``discriminator.input=output``."""

    @contextlib.contextmanager
    def adapter(self, enabled: bool | str) -> Iterator[None]:
        """Run the denoiser as the student (True: LoRA on), the teacher (False: LoRA off) or the adapter
        added by :meth:`add_named_adapter` under that name, inside the block."""
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
        if self._adapter_on is True:
            self.student_samples += x_t.shape[0]
        elif self._adapter_on is False:
            self.teacher_samples += x_t.shape[0]
        x = x_t if cond.concat is None else torch.cat([x_t, cond.concat.to(x_t)], dim=1)
        t = t.reshape(-1).expand(x_t.shape[0]) if t.numel() == 1 else t
        forward = self._forward_denoiser
        if self._compiled_forward is not None and not self._adapter_on and not torch.is_grad_enabled():
            forward = self._compiled_forward
        return forward(x.to(self.dtype), t, cond).to(x_t.dtype)

    def teacher_features(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition,
                         adapter: bool | str = False) -> torch.Tensor:
        """The discriminator's input from the teacher (LoRA off) at (x_t, t), conditional branch.

        ``discriminator.input=features``: the output of :meth:`feature_module`, the forward pass stopping
        at that block; ``output``: the teacher's prediction (B, C, h, w). Gradients flow to x_t, not to
        the frozen weights. ``adapter`` names another denoiser (see :meth:`adapter`) to read instead:
        DMD2's GAN head reads the fake score's features, and trains that adapter through them.
        """
        keep = self._checkpointing_off() if torch.is_grad_enabled() else contextlib.nullcontext()
        if self.cfg.discriminator.input == "output":
            with self.adapter(adapter), keep:
                return self.denoise(x_t, t, cond)

        def stop(_module, _inputs, output):
            raise FeaturesReady(self.features_from_output(output))

        handle = self.feature_module().register_forward_hook(stop)
        try:
            with self.adapter(adapter), keep:
                self.denoise(x_t, t, cond)
        except FeaturesReady as ready:
            return ready.features
        finally:
            handle.remove()
        raise RuntimeError("the feature module did not run during the teacher forward pass")

    @contextlib.contextmanager
    def _checkpointing_off(self) -> Iterator[None]:
        """Gradient checkpointing off inside the block.

        Checkpointing recomputes a block during backward with the adapter state of *that* moment (LoRA
        on), so a teacher forward (LoRA off) that needs gradients keeps its activations instead.
        """
        flagged = [m for m in self.denoiser.modules() if getattr(m, "gradient_checkpointing", False) is True]
        for m in flagged:
            m.gradient_checkpointing = False
        try:
            yield
        finally:
            for m in flagged:
                m.gradient_checkpointing = True

    def features_from_output(self, output) -> torch.Tensor:
        """The discriminator features in the output of :meth:`feature_module`: (B, C, h, w) or (B, tokens, C).

        Default: the output itself, or its first element for blocks that return a tuple.
        """
        return output[0] if isinstance(output, tuple) else output

    # ------------------------------------------------------------------ training
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.denoiser.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ sampling and export
    @abc.abstractmethod
    def pipeline(self, student: bool):
        """A diffusers pipeline over the shared components: the student (LoRA on, its few-step sampler)
        or the teacher (LoRA off, its own sampler)."""

    @abc.abstractmethod
    def export(self, directory: Path) -> Path:
        """Write the student in the format this family's users load; return the written path."""

    @property
    def student_boundary_condition(self) -> bool:
        """Whether the student's x0 carries the consistency boundary scalings: exactly when its sampler
        (``student_scheduler``) applies them, so that training and sampling read the network alike."""
        return applies_boundary_condition(self.cfg.student_scheduler)

    def scheduler_config(self, which: str) -> SchedulerConfig:
        """The configured scheduler ``teacher`` (K-step targets), ``student`` or ``teacher_sampling``."""
        return {
            "teacher": self.cfg.teacher_scheduler,
            "student": self.cfg.student_scheduler,
            "teacher_sampling": self.cfg.teacher_sampling.scheduler,
        }[which]

    def make_scheduler(self, which: str):
        """A fresh diffusers scheduler: ``teacher`` (K-step targets), ``student`` or ``teacher_sampling``."""
        return build_scheduler(self.scheduler_config(which), self.base_scheduler_config)

    base_scheduler_config: dict

