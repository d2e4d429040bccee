"""The error of a bad configuration value and the small checks that raise it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse


class ConfigError(ValueError):
    """A configuration value that is not allowed; the message names the key, value and allowed set."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(self.describe())

    def describe(self) -> str:
        """The one-line message."""
        return f"invalid config value {self.key}={self.value!r}: {self.allowed}"

    def __reduce__(self):  # a sweep job's error travels pickled to the launcher (submitit)
        return type(self), (self.key, self.value, self.allowed)


class UnknownConfigKey(ConfigError):
    """A key that no config or schema declares (a typo on the command line); ``allowed`` says what is."""

    def describe(self) -> str:
        return f"unknown config key {self.key} (in {self.key}={self.value}): {self.allowed}"


class CommandLineError(ConfigError):
    """A command-line override that does not parse or cannot apply; ``allowed`` says why."""

    def describe(self) -> str:
        return f"cannot apply {self.key}: {self.allowed}"


def closest(wanted: str, allowed: Iterable[str]) -> str | None:
    """The allowed name nearest to ``wanted`` (difflib's ratio, at least 0.6), or None."""
    match = difflib.get_close_matches(str(wanted), [str(a) for a in allowed], n=1)
    return match[0] if match else None


def suggestion(wanted: str, allowed: Iterable[str], prefix: str = "", listed: str = "allowed") -> str:
    """``did you mean <prefix><closest>? <listed>: a, b, c`` (the whole list when nothing is close): what a
    config error says about a mistyped name, e.g. ``suggestion("typ", keys, "loss.adversarial.")``."""
    names = sorted(str(a) for a in allowed)
    near = closest(wanted, names)
    listing = f"{listed}: {', '.join(names)}" if names else f"{listed}: none"
    return f"did you mean {prefix}{near}? ({listing})" if near else listing


def one_of(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        near = closest(value, allowed) if isinstance(value, str) else None
        raise ConfigError(key, value, f"allowed values are {', '.join(allowed)}"
                                      + (f" (did you mean {near}?)" if near else ""))


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
