"""Typed configuration schemas, their validation, and their registration in Hydra's ConfigStore.

Every group of ``conf/`` has a dataclass here. Hydra merges the YAML files onto these schemas, so a
wrong *type* fails during composition; :func:`validate` then checks every *value* (ranges, list
lengths per phase, names) and raises :class:`ConfigError` naming the key, the value and what is
allowed. Both happen before any weight is loaded.

Public API (``from flash_exp.config import X``), by module:

- ``errors``: :class:`ConfigError` (and its :class:`UnknownConfigKey`, :class:`CommandLineError`),
  :func:`suggestion`, :func:`refuse_command_urls`, ``COMMAND_URL_SCHEMES``
- ``composition``: :func:`composition_error`, :func:`check_command_line`, :func:`exit_on_config_error`
- ``backbone``: :class:`BackboneConfig`, :class:`LoraConfig`, :class:`SchedulerConfig`,
  :class:`TeacherSamplingConfig`, :class:`DiscriminatorConfig`; ``FAMILIES``, ``DTYPES``,
  ``PREDICTION_TYPES``, ``NULL_CONDITIONS``, ``DISCRIMINATOR_HEADS``, ``DISCRIMINATOR_INPUTS``,
  :func:`train_timestep_range`
- ``task``: :class:`TaskConfig`, :class:`MaskConfig`, :class:`DegradationConfig`, :class:`CannyConfig`,
  :class:`AdapterConfig`, :class:`IdentityConfig`; ``TASKS``, ``MASK_KINDS``
- ``method``: :class:`LossConfig`, :class:`DistillLossConfig`, :class:`AdversarialLossConfig`,
  :class:`DMDLossConfig`, :class:`TimestepsConfig`, :class:`PhasesConfig`, :class:`MethodConfig`,
  :class:`LCMConfig`, :class:`DMD2Config`; ``DISTILL_LOSS_TYPES``, ``GAN_LOSS_TYPES``,
  ``TIMESTEP_DISTRIBUTIONS``, ``REAL_SOURCES``, ``METHODS``, ``LCM_LOSSES``, ``DIFFUSION_FAMILIES``
- ``data``: :class:`DataConfig`; ``DATA_KINDS``
- ``trainer``: :class:`TrainerConfig`, :class:`OptimConfig`, :class:`LoggerConfig`, :class:`EvalConfig`;
  ``PRECISIONS``, ``ACCELERATORS``, ``STRATEGIES``, ``EIGHT_BIT_MISSING``, ``TRACKER_PACKAGES``
- ``root``: :class:`TrainConfig`; ``MAX_SEED``
- ``conf_dir``: ``CONF_DIR``, :func:`backbones_of_families`
- ``validate``: :func:`validate`, :func:`refuse_unknown_keys`
- ``hydra``: :func:`compose`, :func:`compose_train_config`, :func:`register_configs`,
  :func:`register_resolvers`

``flash_exp.config.toy_paths`` (the shipped toy-world asset paths and their resolvers) is imported
as a module.
"""

from flash_exp.config.backbone import (
    DISCRIMINATOR_HEADS,
    DISCRIMINATOR_INPUTS,
    DTYPES,
    FAMILIES,
    NULL_CONDITIONS,
    PREDICTION_TYPES,
    BackboneConfig,
    DiscriminatorConfig,
    LoraConfig,
    SchedulerConfig,
    TeacherSamplingConfig,
    train_timestep_range,
)
from flash_exp.config.composition import check_command_line, composition_error, exit_on_config_error
from flash_exp.config.conf_dir import CONF_DIR, backbones_of_families
from flash_exp.config.data import DATA_KINDS, DataConfig
from flash_exp.config.errors import (
    COMMAND_URL_SCHEMES,
    CommandLineError,
    ConfigError,
    UnknownConfigKey,
    refuse_command_urls,
    suggestion,
)
from flash_exp.config.hydra import compose, compose_train_config, register_configs, register_resolvers
from flash_exp.config.method import (
    DIFFUSION_FAMILIES,
    DISTILL_LOSS_TYPES,
    GAN_LOSS_TYPES,
    LCM_LOSSES,
    METHODS,
    REAL_SOURCES,
    TIMESTEP_DISTRIBUTIONS,
    AdversarialLossConfig,
    DistillLossConfig,
    DMD2Config,
    DMDLossConfig,
    LCMConfig,
    LossConfig,
    MethodConfig,
    PhasesConfig,
    TimestepsConfig,
)
from flash_exp.config.root import MAX_SEED, TrainConfig
from flash_exp.config.task import (
    MASK_KINDS,
    TASKS,
    AdapterConfig,
    CannyConfig,
    DegradationConfig,
    IdentityConfig,
    MaskConfig,
    TaskConfig,
)
from flash_exp.config.trainer import (
    ACCELERATORS,
    EIGHT_BIT_MISSING,
    PRECISIONS,
    STRATEGIES,
    TRACKER_PACKAGES,
    EvalConfig,
    LoggerConfig,
    OptimConfig,
    TrainerConfig,
)
from flash_exp.config.validate import refuse_unknown_keys, validate

__all__ = [
    "ACCELERATORS", "COMMAND_URL_SCHEMES", "CONF_DIR", "DATA_KINDS", "DIFFUSION_FAMILIES", "DISCRIMINATOR_HEADS",
    "DISCRIMINATOR_INPUTS", "DISTILL_LOSS_TYPES", "DTYPES", "EIGHT_BIT_MISSING", "FAMILIES", "GAN_LOSS_TYPES",
    "LCM_LOSSES", "MASK_KINDS", "MAX_SEED", "METHODS", "NULL_CONDITIONS", "PRECISIONS", "PREDICTION_TYPES",
    "REAL_SOURCES", "STRATEGIES", "TASKS", "TIMESTEP_DISTRIBUTIONS", "TRACKER_PACKAGES",
    "AdapterConfig", "AdversarialLossConfig", "BackboneConfig", "CannyConfig", "CommandLineError", "ConfigError", "DMD2Config",
    "DMDLossConfig", "DataConfig", "DegradationConfig", "DiscriminatorConfig", "DistillLossConfig", "EvalConfig",
    "IdentityConfig", "LCMConfig", "LoggerConfig", "LoraConfig", "LossConfig", "MaskConfig", "MethodConfig",
    "OptimConfig", "PhasesConfig", "SchedulerConfig", "TaskConfig", "TeacherSamplingConfig", "TimestepsConfig",
    "TrainConfig", "TrainerConfig", "UnknownConfigKey",
    "backbones_of_families", "check_command_line", "compose", "compose_train_config", "composition_error",
    "exit_on_config_error", "refuse_command_urls", "refuse_unknown_keys", "register_configs", "register_resolvers",
    "suggestion", "train_timestep_range", "validate",
]
