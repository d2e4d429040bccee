"""Where the Hydra config tree ``conf/`` lives, and what its backbone configs say (for messages)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def backbones_of_families(families: list[str]) -> list[str]:
    """Names of the ``conf/backbone`` configs whose family is one of ``families`` (for messages)."""
    directory = CONF_DIR / "backbone"
    names = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            family = OmegaConf.select(OmegaConf.load(path), "backbone.family")
        except Exception:  # noqa: BLE001 (a message helper: an unreadable file is left out)
            continue
        if family in families:
            names.append(path.stem)
    return names
