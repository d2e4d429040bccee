"""An experiment's ``reference``: the paper's choice of the axis it sweeps, ``{override key: value}``
(``reference: {timesteps: mixture}``). It is carried into every job's config; the leaderboard pairs
each other swept value with it, training seed by training seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from flash_exp.config.errors import ConfigError


def normalise_value(value: str) -> str:
    """An override value as compared: whitespace dropped (``[3, 6]`` is ``[3,6]``)."""
    return "".join(str(value).split())


def check_reference_key(cfg: Any, key: str) -> None:
    """Raise :class:`ConfigError` unless ``key`` names a group or key of the config (``timesteps``,
    ``loss.adversarial.type``)."""
    node = cfg
    for i, part in enumerate(key.split(".")):
        names = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []
        if part not in names:
            where = ".".join(key.split(".")[:i]) or "the root"
            raise ConfigError(f"reference.{key}", key, f"names no config key: {where} has {', '.join(names) or 'no keys'}")
        node = getattr(node, part)


def swept_values(jobs: Sequence[Sequence[str]], key: str) -> list[str]:
    """The values ``key`` takes over the jobs' override lists, in launch order, each once."""
    values = []
    for job in jobs:
        for override in job:
            name, _, value = override.partition("=")
            if name.lstrip("+~") == key and normalise_value(value) not in values:
                values.append(normalise_value(value))
    return values


def check_reference(reference: Mapping[str, str], jobs: Sequence[Sequence[str]]) -> None:
    """Raise :class:`ConfigError` when a reference value is not one of the values its key sweeps over
    ``jobs`` (each job's override list); a key the jobs do not sweep is left alone."""
    for key, value in reference.items():
        values = swept_values(jobs, key)
        if len(values) > 1 and normalise_value(value) not in values:
            raise ConfigError(f"reference.{key}", value, f"must be one of the swept values: {', '.join(values)}")
