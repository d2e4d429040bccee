"""This process as a SLURM task: its ranks from the SLURM environment, and the topology check.

:func:`slurm_task` reads the ranks as Lightning's ``SLURMEnvironment`` does (one srun task = one rank,
``SLURM_PROCID`` / ``SLURM_LOCALID`` / ``SLURM_NODEID``); :func:`check_topology` makes
``trainer.devices`` / ``trainer.num_nodes`` agree with ``SLURM_NTASKS_PER_NODE`` / ``SLURM_NNODES``.

``python -m flash_exp.training.slurm`` (e.g. under ``srun``) prints what the preflight sees.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass

from flash_exp.config import ConfigError, TrainerConfig


@dataclass(frozen=True)
class SlurmTask:
    """This process as one task of a SLURM job step."""

    job_id: str  # <array job>_<array task> for an array task, else SLURM_JOB_ID
    ntasks: int
    ntasks_per_node: int
    nnodes: int
    global_rank: int
    local_rank: int
    node_rank: int
    nodelist: str
    job_name: str
    restart_count: int

    def describe(self) -> str:
        return (f"SLURM job {self.job_id} (restart {self.restart_count}): rank {self.global_rank}/{self.ntasks}, "
                f"local rank {self.local_rank}/{self.ntasks_per_node}, node {self.node_rank}/{self.nnodes} "
                f"({socket.gethostname()})")


def _tasks_per_node(env: dict[str, str], ntasks: int, nnodes: int) -> int:
    if env.get("SLURM_NTASKS_PER_NODE"):
        return int(env["SLURM_NTASKS_PER_NODE"])
    # SLURM_TASKS_PER_NODE looks like "2(x3),1": take the first node's count
    match = re.match(r"(\d+)", env.get("SLURM_TASKS_PER_NODE", ""))
    return int(match.group(1)) if match else max(1, ntasks // max(1, nnodes))


def slurm_task(env: dict[str, str] | None = None) -> SlurmTask | None:
    """This process's SLURM task, or None when SLURM did not start it as a task.

    The detection is Lightning's (``SLURMEnvironment.detect``): ``SLURM_NTASKS`` is set and the job
    is not an interactive shell (job name ``bash`` or ``interactive``)."""
    env = dict(os.environ if env is None else env)
    if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    ntasks = int(env["SLURM_NTASKS"])
    nnodes = int(env.get("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES", "1")))
    job = env.get("SLURM_JOB_ID", "")
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        job = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return SlurmTask(job_id=job, ntasks=ntasks, ntasks_per_node=_tasks_per_node(env, ntasks, nnodes),
                     nnodes=nnodes, global_rank=int(env.get("SLURM_PROCID", 0)),
                     local_rank=int(env.get("SLURM_LOCALID", 0)), node_rank=int(env.get("SLURM_NODEID", 0)),
                     nodelist=env.get("SLURM_JOB_NODELIST", env.get("SLURM_NODELIST", "")),
                     job_name=env.get("SLURM_JOB_NAME", ""), restart_count=int(env.get("SLURM_RESTART_COUNT", 0)))


def check_topology(trainer: TrainerConfig, task: SlurmTask) -> None:
    """``trainer.devices`` must equal the tasks per node and ``trainer.num_nodes`` the node count: under
    SLURM every task is one rank, and a mismatch makes Lightning wait for ranks that never come."""
    fix = ("with hydra/launcher=slurm keep hydra.launcher.tasks_per_node=${trainer.devices} and "
           "hydra.launcher.nodes=${trainer.num_nodes} (the preset's defaults)")
    if trainer.devices != task.ntasks_per_node:
        raise ConfigError("trainer.devices", trainer.devices,
                          f"SLURM runs {task.ntasks_per_node} task(s) per node (SLURM_NTASKS_PER_NODE) in job "
                          f"{task.job_id}; one task is one device, so they must be equal; {fix}")
    if trainer.num_nodes != task.nnodes:
        raise ConfigError("trainer.num_nodes", trainer.num_nodes,
                          f"SLURM allocated {task.nnodes} node(s) (SLURM_NNODES) to job {task.job_id}; they must "
                          f"be equal; {fix}")
    if task.ntasks != task.ntasks_per_node * task.nnodes:
        raise ConfigError("trainer.devices", trainer.devices,
                          f"SLURM_NTASKS={task.ntasks} is not SLURM_NTASKS_PER_NODE x SLURM_NNODES "
                          f"({task.ntasks_per_node} x {task.nnodes}): request the same task count on every node")


def describe_environment() -> str:
    """The SLURM, CUDA and rendezvous variables this process sees, on one line."""
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
            "SLURM_NNODES", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_RESTART_COUNT",
            "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT")
    return " ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ) or "(no SLURM variables)"


if __name__ == "__main__":  # print what the preflight sees, e.g. `srun python -m flash_exp.training.slurm`
    print(describe_environment())
    t = slurm_task()
    print(t.describe() if t else "not a SLURM task")
    sys.exit(0)
