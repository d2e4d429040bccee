"""The preflight of a training process: check the topology, choose the strategy and cluster plugin.

Runs before any weight is loaded. Under SLURM the cluster plugin is
``SLURMEnvironment(auto_requeue=False)``: submitit, not Lightning, requeues (see
:mod:`flash_exp.training.signals`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from flash_exp.config import ConfigError, TrainerConfig
from flash_exp.training.slurm import SlurmTask, check_topology, slurm_task


def _under_hydra_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 (no Hydra: a plain call of train())
        return False


@dataclass(frozen=True)
class Launch:
    """How this process takes part in training: the Trainer's ``strategy`` and ``plugins``."""

    strategy: Any
    plugins: list
    task: SlurmTask | None
    world_size: int

    def describe(self) -> str:
        where = self.task.describe() if self.task else f"local ({socket.gethostname()})"
        strategy = self.strategy if isinstance(self.strategy, str) else type(self.strategy).__name__
        return f"{where}; world size {self.world_size}; strategy {strategy}"


def preflight(trainer: TrainerConfig, env: dict[str, str] | None = None) -> Launch:
    """Check the topology and choose the strategy and cluster plugin; raises :class:`ConfigError`.

    - Under SLURM (srun tasks): ``trainer.devices == SLURM_NTASKS_PER_NODE`` and ``trainer.num_nodes ==
      SLURM_NNODES``; ranks come from the SLURM variables through ``SLURMEnvironment(auto_requeue=False)``;
      ``strategy=auto`` (or ``ddp``) with more than one rank becomes DDP (NCCL on GPUs, gloo on CPUs)
      that finds unused parameters (see :func:`_ddp`).
    - Outside SLURM, more than one device under a Hydra multirun or a submitit job is refused: Lightning
      would start the other ranks by re-running the command line (the whole sweep, or submitit's
      entry point). A single run with ``devices > 1`` gets Lightning's own ``ddp`` launch.
    - ``strategy=fsdp`` is Lightning's FSDP strategy (:mod:`flash_exp.training.sharding`), under SLURM
      or not, whatever the number of ranks.
    """
    task = slurm_task(env)
    world = trainer.devices * trainer.num_nodes
    strategy: Any = trainer.strategy
    if task is not None:
        check_topology(trainer, task)
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins: list = [SLURMEnvironment(auto_requeue=False)]
        if strategy in ("auto", "ddp") and world > 1:
            strategy = _ddp()
        if strategy == "fsdp":
            strategy = _fsdp(trainer.accelerator)
        return Launch(strategy, plugins, task, world)
    if world > 1:
        if trainer.num_nodes > 1:
            raise ConfigError("trainer.num_nodes", trainer.num_nodes,
                              "more than one node needs SLURM: run with -m hydra/launcher=slurm")
        if _under_hydra_multirun() or "SUBMITIT_FOLDER" in os.environ or "SUBMITIT_LOCAL_JOB_ID" in os.environ:
            raise ConfigError("trainer.devices", trainer.devices,
                              "more than one device in a Hydra multirun or a submitit_local job outside SLURM "
                              "would make Lightning re-run the launching command for each rank; use "
                              "hydra/launcher=slurm (one task per device), or devices=1")
        if strategy in ("auto", "ddp"):
            strategy = _ddp()
    if strategy == "fsdp":
        strategy = _fsdp(trainer.accelerator)
    return Launch(strategy, [], None, world)


def _fsdp(accelerator: str) -> Any:
    """Lightning's FSDP strategy, imported here: a config error must exit before torch loads."""
    from flash_exp.training.sharding import fsdp_strategy

    return fsdp_strategy(accelerator)


def _ddp():
    """DDP for the two manual optimisation steps: the generator's backward leaves the discriminator
    unused (and the discriminator's the LoRA), so DDP must look for unused parameters. Lightning
    re-arms DDP's reducer before each ``manual_backward``, so both steps are averaged over ranks.
    The process group backend follows the device: NCCL on GPUs, gloo on CPUs."""
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=True)
