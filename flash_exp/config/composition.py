"""Hydra's composition errors as one-line :class:`ConfigError` s, and the check of a command line that
every ``python -m flash_exp.<entry point>`` runs before Hydra (or anything else) does.

A mistyped key (``loss.adversarial.typ=lsgan``) names the key and the closest one its parent has
(``type``), not Hydra's ``+key=value`` (which would add a key the schema then refuses); a wrong
option of a config group (``backbone=sd16``, ``experiment=nope``) names the group's options; a value
of the wrong type names the key and the type.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from flash_exp.config.errors import CommandLineError, ConfigError, UnknownConfigKey, suggestion
from flash_exp.config.hydra import compose


def _override_value(overrides: list[str], key: str) -> str:
    """The value the command line gives ``key`` (or a key under it), as typed; '?' when none does."""
    for override in overrides:
        name, sep, value = override.lstrip("+~").partition("=")
        if sep and (name == key or name.startswith(f"{key}.")):
            return value
    return "?"


def _override_naming(overrides: list[str], key: str) -> str:
    """The override whose key is ``key`` or lies under it (``loss.adversarial.typ=lsgan`` for
    ``loss.adversarial.typ``), else ``key``."""
    for override in overrides:
        name = override.lstrip("+~").partition("=")[0]
        if name == key or name.startswith(f"{key}."):
            return name
    return key


def composition_error(err: Exception, overrides: list[str]) -> ConfigError:
    """The :class:`ConfigError` that says in one line what Hydra's or OmegaConf's composition error
    ``err`` (raised composing ``overrides``) means, with the closest valid name."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, MissingConfigException) and err.missing_cfg_file and err.options is not None:
        group, _, option = str(err.missing_cfg_file).rpartition("/")
        key = group or "config"
        return ConfigError(key, option, f"no such option of the config group {group or 'conf'}; "
                                        + suggestion(option, err.options, listed="its options are"))
    if isinstance(err, OverrideParseException):
        return CommandLineError("the command line", " ".join(overrides), str(err).splitlines()[0])
    cause = err.__cause__ or err
    full_key = str(getattr(cause, "full_key", "") or "")
    parent = getattr(cause, "parent_node", None)
    message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    if full_key and isinstance(parent, DictConfig) and " not in " in message:  # the key does not exist
        prefix = full_key.rpartition(".")[0]
        name = full_key.rpartition(".")[2]
        given = _override_naming(overrides, full_key)
        return UnknownConfigKey(given, _override_value(overrides, given),
                                suggestion(name, parent.keys(), f"{prefix}." if prefix else "",
                                           listed=f"the keys of {prefix or 'the root'} are"))
    if full_key:
        return ConfigError(full_key, _override_value(overrides, full_key), message)
    return CommandLineError(" ".join(overrides) or "the config", "", message)


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """The command line once with every sweep override (``a=1,2``) at its first value, then once for each
    other value of each sweep override: every value composed at least once, without the product."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise composition_error(err, overrides) from None
    values: list[list[str]] = []
    for o in parsed:
        if not o.is_sweep_override():
            values.append([o.input_line])
            continue
        try:
            values.append([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] or [o.input_line])
        except Exception:  # noqa: BLE001 (a glob sweep lists its options only against a config: Hydra checks it)
            values.append([])
    base = [v[0] for v in values if v]
    variants = [base]
    for i, options in enumerate(values):
        for other in options[1:]:
            variants.append([other if j == i else v[0] for j, v in enumerate(values) if v])
    return variants


def check_command_line(argv: list[str], config_name: str) -> None:
    """Compose ``conf/<config_name>.yaml`` with the overrides of a Hydra command line ``argv`` (flags
    such as ``-m`` or ``--cfg job`` ignored, each value of a sweep composed once); raises
    :class:`ConfigError`. A command line naming another config (``--config-name``/``-cn``,
    ``--config-path``, ``--config-dir``) is left to Hydra. Schemas the config names besides the training
    one (``evaluate_schema``) must be registered first."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.config_name or args.config_path or args.config_dir or args.help or args.hydra_help:
        return
    for overrides in sweep_variants(list(args.overrides)):
        compose(overrides, config_name, return_hydra_config=True)


def exit_on_config_error(argv: list[str], config_name: str) -> None:
    """:func:`check_command_line`; a config error is printed as one line and the process exits 2, before
    Hydra makes a run directory."""
    try:
        check_command_line(argv, config_name)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
