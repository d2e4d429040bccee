"""Command-line conveniences shared by the entry points that compose the training config."""

from __future__ import annotations

# Groups that sit in conf/train.yaml's defaults list as `<group>: null`: Hydra refuses `+<group>=x` for
# them ("Multiple values"), yet `+experiment=x` is what this project documented first.
DEFAULTS_LIST_GROUPS = ("experiment", "debug")


def normalise_overrides(args: list[str]) -> list[str]:
    """``+experiment=x`` / ``++experiment=x`` (and the same for ``debug``) become ``experiment=x``."""
    out = []
    for arg in args:
        stripped = arg.lstrip("+")
        if arg.startswith("+") and stripped.partition("=")[0] in DEFAULTS_LIST_GROUPS:
            arg = stripped
        out.append(arg)
    return out
