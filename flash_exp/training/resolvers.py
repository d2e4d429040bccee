"""The OmegaConf resolver of the launcher presets (``conf/hydra/launcher/*.yaml``)."""

from __future__ import annotations

from omegaconf import OmegaConf


def _gpus_per_node(accelerator: str, devices: int) -> int | None:
    """``hydra.launcher.gpus_per_node``: ``trainer.devices`` unless the trainer runs on CPUs."""
    return None if str(accelerator).lower() == "cpu" else int(devices)


def register_launcher_resolvers() -> None:
    """``${gpus_per_node:${trainer.accelerator},${trainer.devices}}`` used by conf/hydra/launcher/*.yaml."""
    if not OmegaConf.has_resolver("gpus_per_node"):
        OmegaConf.register_new_resolver("gpus_per_node", _gpus_per_node)
