"""The root schema :class:`TrainConfig`: every group, the seed, the run name, and the checks that span
groups (one entry per phase, task x backbone family, method x family)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flash_exp.config.backbone import BackboneConfig, train_timestep_range
from flash_exp.config.conf_dir import backbones_of_families
from flash_exp.config.data import DataConfig
from flash_exp.config.errors import ConfigError, refuse_command_urls
from flash_exp.config.method import (
    DIFFUSION_FAMILIES,
    LossConfig,
    MethodConfig,
    PhasesConfig,
    TimestepsConfig,
)
from flash_exp.config.reference import check_reference_key
from flash_exp.config.task import TaskConfig
from flash_exp.config.trainer import EvalConfig, LoggerConfig, TrainerConfig

MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range


@dataclass
class TrainConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    timesteps: TimestepsConfig = field(default_factory=TimestepsConfig)
    phases: PhasesConfig = field(default_factory=PhasesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 0
    run_name: str = "flash"
    # an experiment's paper choice of its swept axis, {override key: value}, e.g. {timesteps: mixture}:
    # the leaderboard compares every other value of the sweep against it, seed by seed
    reference: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ConfigError("seed", self.seed, f"must be in [0, {MAX_SEED}]")
        for key in self.reference:
            check_reference_key(self, key)
        mean = self.timesteps.gaussian_mean
        if mean is not None and not 0 <= mean <= min(self.phases.k) - 1:
            raise ConfigError("timesteps.gaussian_mean", mean, "index units: must be in [0, K - 1] for every "
                                                               f"phase (phases.k={list(self.phases.k)})")
        n = len(self.phases.k)
        for key, values in (
            ("phases.iterations", self.phases.iterations),
            ("phases.names", self.phases.names),
            ("timesteps.mode_probs", self.timesteps.mode_probs),
            ("loss.distill.weight", self.loss.distill.weight),
            ("loss.adversarial.weight", self.loss.adversarial.weight),
            ("loss.dmd.weight", self.loss.dmd.weight),
        ):
            if len(values) != n:
                raise ConfigError(
                    key, list(values), f"needs one entry per phase: {n} (the length of phases.k)"
                )
        if self.timesteps.distribution in ("mixture", "modes"):
            for i, k in enumerate(self.phases.k):
                if k < self.timesteps.num_modes:
                    raise ConfigError(
                        f"phases.k[{i}]",
                        k,
                        f"must be >= timesteps.num_modes ({self.timesteps.num_modes}) for a "
                        f"{self.timesteps.distribution} distribution",
                    )
        if self.backbone.family not in self.task.supported_families:
            names = backbones_of_families(self.task.supported_families)
            raise ConfigError(
                "task",
                self.task.name,
                f"does not run on backbone family {self.backbone.family!r} (backbone={self.backbone.name}); "
                f"supported: {', '.join(self.task.supported_families)}"
                + (f" (backbone={' | '.join(names)})" if names else ""),
            )
        if self.data.kind == "folder" and self.task.name != "t2i" and not self.task.grid_shards:
            raise ConfigError("task.grid_shards", [], f"task={self.task.name} on data=folder needs the held-out "
                              "conditions of its sample grids as shards (python -m flash_exp.data.make_shards)")
        refuse_command_urls("task.grid_shards", self.task.grid_shards, self.data.allow_command_urls)
        dmd = self.loss.dmd
        first, last = train_timestep_range(self.backbone.prediction)
        lo = first if dmd.min_timestep is None else dmd.min_timestep
        hi = last if dmd.max_timestep is None else dmd.max_timestep
        if not first <= lo <= hi <= last:
            raise ConfigError("loss.dmd.min_timestep/max_timestep", [dmd.min_timestep, dmd.max_timestep],
                              f"need {first} <= min <= max <= {last}, the training timesteps of a "
                              f"backbone.prediction={self.backbone.prediction} teacher (null: that bound)")
        if self.method.name == "lcm" and self.backbone.family not in DIFFUSION_FAMILIES:
            raise ConfigError("method", self.method.name, f"runs on the diffusion families "
                              f"{', '.join(DIFFUSION_FAMILIES)}, not {self.backbone.name!r} (family "
                              f"{self.backbone.family}): its consistency solver and boundary scalings are "
                              "defined for DDPM-type schedules; use method=flash or method=dmd2")
        if self.trainer.strategy == "fsdp" and self.backbone.discriminator.input == "features":
            raise ConfigError("backbone.discriminator.input", "features",
                              "trainer.strategy=fsdp needs backbone.discriminator.input=output: a forward pass "
                              "stopped at a block leaves FSDP's sharded blocks gathered (or use strategy auto or ddp)")
        if self.trainer.strategy == "fsdp" and self.backbone.family == "pixart":
            raise ConfigError("trainer.strategy", "fsdp", "does not shard PixArt (peft wraps its denoiser; "
                              "0.6 B parameters fit every GPU whole): use strategy auto or ddp")
        if self.trainer.strategy == "fsdp" and self.backbone.dtype != "float32" and "mixed" not in str(self.trainer.precision):
            raise ConfigError("trainer.precision", self.trainer.precision,
                              f"with trainer.strategy=fsdp and backbone.dtype={self.backbone.dtype} use bf16-mixed or "
                              "16-mixed: Lightning's FSDP casts every weight to the dtype of a '-true' precision")
        if self.task.name == "adapter_canny" and not self.task.adapter.pretrained:
            raise ConfigError("task.adapter.pretrained", self.task.adapter.pretrained,
                              "adapter_canny needs a T2IAdapter (hub id or local directory)")
