"""Validation of a composed config: unknown keys refused, every value checked, typed dataclasses out."""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig, OmegaConf

from flash_exp.config.errors import ConfigError, UnknownConfigKey, suggestion
from flash_exp.config.root import TrainConfig


def refuse_unknown_keys(node: DictConfig, prefix: str = "") -> None:
    """Raise :class:`ConfigError` for a key that no schema declares (``+trainer.foo=1`` adds one that would
    otherwise be ignored in silence); free-form dict fields (scheduler kwargs, eval options) are open."""
    kind = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(kind):
        return
    names = [f.name for f in dataclasses.fields(kind)]
    for key in node.keys():
        path = f"{prefix}{key}"
        if key not in names:
            raise UnknownConfigKey(path, node._get_node(key)._value(),
                                   suggestion(str(key), names, prefix,
                                              listed=f"the keys of {prefix.rstrip('.') or 'the root'} are"))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none() and not child._is_missing():
            refuse_unknown_keys(child, f"{path}.")


def validate(cfg: DictConfig) -> TrainConfig:
    """Check every value of a composed config; return it as typed dataclasses.

    ``OmegaConf.to_object`` builds each dataclass, which runs its ``__post_init__`` checks.
    Raises :class:`ConfigError` naming the first offending key.
    """
    from omegaconf.errors import (
        ConfigKeyError,
        InterpolationResolutionError,
        InterpolationToMissingValueError,
        MissingMandatoryValue,
    )

    schema = OmegaConf.structured(TrainConfig)
    try:
        merged = OmegaConf.merge(schema, {k: v for k, v in cfg.items() if k != "hydra"})
    except ConfigKeyError as err:
        raise ConfigError(str(err.full_key or err.key), "?", f"unknown key ({err.msg.splitlines()[0]})") from None
    refuse_unknown_keys(merged)
    try:
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except InterpolationResolutionError as err:  # ${required:...} and other resolvers raising ConfigError
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None:
            raise cause from None
        if not isinstance(err, InterpolationToMissingValueError):
            raise
        key = "backbone.pretrained" if "backbone.pretrained" in str(err) else str(err.full_key or "a key")
        raise ConfigError(key, "???", "a value is required") from None
    except MissingMandatoryValue as err:
        key = str(getattr(err, "full_key", "") or "a key")
        hint = (" (a hub id or a local diffusers pipeline directory; this task has no public teacher for "
                "this backbone, see README 'Tasks')" if key == "backbone.pretrained" else "")
        raise ConfigError(key, "???", "a value is required" + hint) from None
