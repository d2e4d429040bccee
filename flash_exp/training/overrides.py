"""Override-list helpers shared by the entry points that compose the training config: Hydra's
``+group=`` spelling for defaults-list groups, and the jobs of a sweep with their swept values."""

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


def sweep_points(params: dict[str, str], args: list[str]) -> list[list[str]]:
    """The override list of every job of a sweep, as Hydra's basic sweeper expands them: the config's
    ``hydra.sweeper.params`` first, then the command line (a key given there replaces the file's list)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{key}={value}" for key, value in params.items()] + list(args)
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(lines), None)[0]


def swept_values(jobs: list[list[str]]) -> list[list[str]]:
    """Per job, the overrides it does not share with every other job (its swept values)."""
    if len(jobs) < 2:
        return [[] for _ in jobs]
    common = set(jobs[0]).intersection(*(set(j) for j in jobs[1:]))
    return [[o for o in job if o not in common] for job in jobs]
