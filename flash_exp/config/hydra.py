"""The schemas and resolvers registered with Hydra, and one in-process ``compose()`` of ``conf/``."""

from __future__ import annotations

from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from flash_exp.config.conf_dir import CONF_DIR
from flash_exp.config.errors import ConfigError
from flash_exp.config.method import dmd2_student_scheduler
from flash_exp.config.root import TrainConfig
from flash_exp.config.toy_paths import toytask_asset, toyworld_asset
from flash_exp.config.validate import validate


def compose(overrides: list[str], config_name: str = "train", return_hydra_config: bool = False) -> DictConfig:
    """``conf/<config_name>.yaml`` composed in-process with ``overrides``, as the command line would compose
    it (unvalidated; :func:`validate` types and checks it). Other schemas or resolvers a config names
    (``evaluate_schema``, the launcher's resolvers) must be registered by the caller first. A key, group
    option or type the config does not have raises :class:`ConfigError` (one line, the closest name)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from flash_exp.config.composition import composition_error

    register_configs()
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name=config_name, overrides=overrides,
                                 return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as err:
        raise composition_error(err, overrides) from None


def compose_train_config(overrides: list[str]) -> TrainConfig:
    """The training config that ``python -m flash_exp.train <overrides>`` would validate (for the
    tools that take the same overrides: cache_latents, prefetch, plan, bench)."""
    return validate(compose(overrides))


def register_configs() -> None:
    """Register the root schema so ``conf/train.yaml`` can name it first in its defaults list."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)


def register_resolvers() -> None:
    """``${toyworld:teacher}``, ``${toyworld:train_shards}``...: paths of the shipped toy-world assets."""
    if not OmegaConf.has_resolver("toyworld"):
        OmegaConf.register_new_resolver("toyworld", toyworld_asset)
    if not OmegaConf.has_resolver("required"):  # ${required:key,why}: a value the user must give
        OmegaConf.register_new_resolver("required", _required)
    if not OmegaConf.has_resolver("toytask"):  # ${toytask:inpainting}, ${toytask:faces_train_shards}, ...
        OmegaConf.register_new_resolver("toytask", toytask_asset)
    if not OmegaConf.has_resolver("dmd2_student_scheduler"):  # conf/method/dmd2.yaml's sampler by prediction
        OmegaConf.register_new_resolver("dmd2_student_scheduler", dmd2_student_scheduler)


def _required(key: str, why: str = "") -> Any:
    raise ConfigError(key, "<unset>", "a value is required" + (f": {why}" if why else ""))
