"""The error of a bad configuration value and the small checks that raise it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key, value and allowed set."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config value {key}={value!r}: {allowed}")

    def __reduce__(self):  # a sweep job's error travels pickled to the launcher (submitit)
        return type(self), (self.key, self.value, self.allowed)


def one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ConfigError(key, value, f"allowed values are {', '.join(allowed)}")


def positive(key: str, value: float) -> None:
    """Raise :class:`ConfigError` unless ``value`` > 0."""
    if not value > 0:
        raise ConfigError(key, value, "must be > 0")


COMMAND_URL_SCHEMES = ("pipe",)  # webdataset opens these by running the rest of the URL in a shell


def refuse_command_urls(key: str, urls: Iterable[str], allowed: bool) -> None:
    """Raise :class:`ConfigError` for the first shard URL that webdataset would open by running a shell
    command (``pipe:CMD``), unless ``allowed`` (``data.allow_command_urls``)."""
    if allowed:
        return
    for url in urls:
        if urlparse(str(url)).scheme in COMMAND_URL_SCHEMES:
            raise ConfigError(key, url, "a pipe: URL runs its text as a shell command; refused unless "
                                        "data.allow_command_urls=true (only for shard lists you wrote yourself)")
