"""The ``trainer`` (Lightning and the optimiser), ``logger`` (experiment trackers) and ``eval`` groups."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from flash_exp.config.errors import ConfigError, one_of, positive

# Lightning's precision and accelerator names (lightning.fabric's _PRECISION_INPUT and accelerator registry)
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "transformer-engine",
              "transformer-engine-float16", "32", "16", "bf16", "64")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# auto/ddp: every rank holds the whole model (DDP beyond one device); fsdp: the frozen denoiser sharded
STRATEGIES = ("auto", "ddp", "fsdp")

EIGHT_BIT_MISSING = ("needs bitsandbytes (AdamW8bit), which is not installed: pip install bitsandbytes, "
                     "or set trainer.optim.eight_bit=false")


@dataclass
class OptimConfig:
    lr: float = 1e-5
    lr_discriminator: float = 1e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    eight_bit: bool = False  # bitsandbytes AdamW8bit (optimiser states in 8 bits); not a dependency

    def __post_init__(self) -> None:
        positive("trainer.optim.lr", self.lr)
        positive("trainer.optim.lr_discriminator", self.lr_discriminator)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError("trainer.optim.betas", list(self.betas), "needs two values, each in [0, 1)")
        if not 0.0 <= self.weight_decay:
            raise ConfigError("trainer.optim.weight_decay", self.weight_decay, "must be >= 0")
        if self.eight_bit and importlib.util.find_spec("bitsandbytes") is None:
            raise ConfigError("trainer.optim.eight_bit", True, EIGHT_BIT_MISSING)


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    max_steps: int | None = None  # default: the sum of phases.iterations
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    checkpoint_every: int = 500
    sample_every: int = 1000
    log_every: int = 10
    sample_nfe: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_sample_prompts: int = 4
    resume: str = "auto"  # "auto": continue from <run>/checkpoints/last.ckpt when it exists; "never"
    keep_checkpoints: int | None = None  # the N latest step_*.ckpt are kept (plus last.ckpt); null: all
    wandb: bool = False  # replaced by the logger group; kept only to point old command lines there
    compile_teacher: bool = False  # torch.compile the teacher's no-grad calls (the K-step rollout)
    offload_frozen: bool = False  # VAE encoder and text encoders on CPU, on the GPU only while encoding
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        one_of("trainer.resume", self.resume, ("auto", "never"))
        one_of("trainer.precision", str(self.precision), PRECISIONS)
        one_of("trainer.accelerator", str(self.accelerator), ACCELERATORS)
        one_of("trainer.strategy", str(self.strategy), STRATEGIES)
        if self.strategy == "fsdp" and self.gradient_clip_val:
            raise ConfigError("trainer.gradient_clip_val", self.gradient_clip_val,
                              "Lightning's FSDP strategy does not clip gradients by norm: set it to null with "
                              "trainer.strategy=fsdp (or use strategy auto or ddp)")
        for key, value in (("trainer.devices", self.devices), ("trainer.num_nodes", self.num_nodes)):
            if value < 1:
                raise ConfigError(key, value, "must be a positive integer")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ConfigError("trainer.max_steps", self.max_steps, "must be a positive integer or null")
        if self.accumulate_grad_batches != 1:
            raise ConfigError(
                "trainer.accumulate_grad_batches",
                self.accumulate_grad_batches,
                "only 1 is supported (manual optimisation steps once per data batch)",
            )
        if not self.sample_nfe or any(n <= 0 for n in self.sample_nfe):
            raise ConfigError("trainer.sample_nfe", list(self.sample_nfe), "positive step counts")
        if self.wandb:
            raise ConfigError("trainer.wandb", True, "trackers are the logger group now: use logger=wandb")
        if self.keep_checkpoints is not None and self.keep_checkpoints <= 0:
            raise ConfigError("trainer.keep_checkpoints", self.keep_checkpoints,
                              "must be a positive integer (the latest N step checkpoints besides last.ckpt) "
                              "or null (keep all)")


# --------------------------------------------------------------------------------------------- logger
# tracker name -> the pip package it needs (None: always available)
TRACKER_PACKAGES: dict[str, str | None] = {"csv": None, "tensorboard": "tensorboard", "wandb": "wandb",
                                           "mlflow": "mlflow"}


@dataclass
class LoggerConfig:
    """Experiment trackers (``conf/logger/``): metrics, hyper-parameters and the sample grids as images.
    wandb and mlflow are not dependencies; choosing one that is not installed fails at validation."""

    trackers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    project: str = "flash_exp"  # wandb project / MLflow experiment name
    tracking_uri: str | None = None  # MLflow; null: file:<run dir>/mlruns
    offline: bool = False  # wandb: write locally, sync later with `wandb sync`
    log_images: bool = True  # send the sample grids to the trackers that take images

    def __post_init__(self) -> None:
        if not self.trackers:
            raise ConfigError("logger.trackers", list(self.trackers), "name at least one tracker, e.g. [csv]")
        for name in self.trackers:
            one_of("logger.trackers", name, tuple(TRACKER_PACKAGES))
            package = TRACKER_PACKAGES[name]
            if package is not None and importlib.util.find_spec(package) is None:
                raise ConfigError("logger.trackers", name, f"needs the {package} package, which is not "
                                  f"installed: pip install {package}, or choose another logger (csv, tensorboard)")


# --------------------------------------------------------------------------------------------- eval
@dataclass
class EvalConfig:
    """Which benchmarks to score after training (``after_train``) and by ``make eval``."""

    benchmarks: list[str] = field(default_factory=lambda: ["toy", "toy_diversity"])
    draws: int = 1  # disjoint draws of each benchmark (other noise; other prompts where the pool allows)
    after_train: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    # keys of conf/evaluate.yaml for the evaluation after training (student_nfe, device, cache_dir, ...)
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.draws, bool) or not isinstance(self.draws, int) or self.draws < 1:
            raise ConfigError("eval.draws", self.draws, "must be an integer >= 1")
