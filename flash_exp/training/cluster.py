"""Running on a cluster: SLURM preflight, the DDP strategy, checkpoint-then-requeue, failure markers.

Everything here runs inside a training job *before* any weight is loaded, or around ``Trainer.fit``:

- :func:`slurm_task` reads this process's ranks from the SLURM environment (as Lightning's
  ``SLURMEnvironment`` does: one srun task = one rank, ``SLURM_PROCID`` / ``SLURM_LOCALID`` /
  ``SLURM_NODEID``);
- :func:`preflight` checks that ``trainer.devices`` / ``trainer.num_nodes`` agree with
  ``SLURM_NTASKS_PER_NODE`` / ``SLURM_NNODES`` and picks the strategy and the cluster plugin
  (``SLURMEnvironment(auto_requeue=False)``: submitit, not Lightning, requeues);
- :class:`SignalCheckpoint` saves ``checkpoints/last.ckpt`` at the first step boundary after SLURM
  announces the end (submitit's preemption signal USR2, sent ``signal_delay_s`` before the time
  limit, or SIGTERM from ``scontrol requeue`` / preemption), then lets submitit requeue the job; the
  requeued job runs again in the same sweep sub-directory and ``trainer.resume=auto`` continues there;
- :func:`write_failure` leaves ``<run_dir>/FAILED`` (first line: the error; then the traceback) when a
  job raises, because SLURM and submitit report a Hydra job that raised as COMPLETED. The evaluation
  (``flash_exp.training.rundir.FAILURE_MARKERS``) and the leaderboard read that marker;
- :func:`write_interruption` leaves ``<run_dir>/INTERRUPTED`` when a signal stopped the run after it
  saved ``last.ckpt`` (the process then exits non-zero); the leaderboard lists the run as
  "interrupted" until a relaunch (or SLURM's requeue) resumes it and :func:`clear_failure` moves the
  marker away.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flash_exp.config import ConfigError, TrainerConfig
from flash_exp.files import write_text_atomic

log = logging.getLogger(__name__)

FAILURE_FILE = "FAILED"  # one of flash_exp.training.rundir.FAILURE_MARKERS
INTERRUPTED_FILE = "INTERRUPTED"  # flash_exp.training.rundir.INTERRUPTED_MARKER
RANKS_DIR = "ranks"  # <run_dir>/ranks/rank<k>.json: each rank's final step and trainable-state digest
LAST_CKPT = "last.ckpt"


# ---------------------------------------------------------------------------------------------- SLURM
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
    """
    task = slurm_task(env)
    world = trainer.devices * trainer.num_nodes
    strategy: Any = trainer.strategy
    if task is not None:
        check_topology(trainer, task)
        if str(strategy).startswith(("ddp_spawn", "ddp_fork", "ddp_notebook")):
            raise ConfigError("trainer.strategy", strategy,
                              "under SLURM each task is already one rank: use auto or ddp (processes are "
                              "started by srun, not by Lightning)")
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins: list = [SLURMEnvironment(auto_requeue=False)]
        if strategy in ("auto", "ddp") and world > 1:
            strategy = _ddp()
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
    return Launch(strategy, [], None, world)


def _ddp():
    """DDP for the two manual optimisation steps: the generator's backward leaves the discriminator
    unused (and the discriminator's the LoRA), so DDP must look for unused parameters. Lightning
    re-arms DDP's reducer before each ``manual_backward``, so both steps are averaged over ranks.
    The process group backend follows the device: NCCL on GPUs, gloo on CPUs."""
    from lightning.pytorch.strategies import DDPStrategy

    return DDPStrategy(find_unused_parameters=True)


# ---------------------------------------------------------------------------------------------- signals
def _requeue_signal() -> int:
    """submitit's preemption/time-limit signal (USR2 unless ``SUBMITIT_PREEMPT_SIGNAL`` says otherwise)."""
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2").upper().removeprefix("SIG")
    return int(getattr(signal, name, signal.SIGUSR2))


def _flush_loggers(trainer) -> None:
    """Write what the loggers buffer (CSVLogger keeps rows in memory between flushes), so the rows
    of the steps before a stop are on disk beside the checkpoint the resumed run continues from."""
    for logger in trainer.loggers:
        logger.save()


def _signal_checkpoint_callback_class():
    import torch
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class SignalCheckpoint(Checkpoint):
        """Checkpoint at the first step boundary after SLURM says the job must end, then requeue.

        - USR2 (submitit's signal, ``--signal=USR2@signal_delay_s`` before the time limit, or a
          preemption): the handler only sets a flag; at the end of the current step every rank agrees
          (an all-reduce), ``last.ckpt`` is written (atomically), and then submitit's own handler runs
          on rank 0: it pickles the Hydra launcher's ``checkpoint()`` (the same job, same sweep
          sub-directory), calls ``scontrol requeue`` (up to ``max_num_timeout`` times after a time
          limit; always after a preemption) and exits. Other ranks wait for SLURM to stop them.
        - SIGTERM (``scontrol requeue``, ``scancel``, preemption with a grace time): Lightning's handler
          sets ``trainer.received_sigterm`` and stops at the next step; ``last.ckpt`` is written first.

        Nothing is saved inside a signal handler. As a ``Checkpoint`` callback it runs after the
        ``ModelCheckpoint`` of the same step; a SIGTERM that lands after it in a single-process run is
        checkpointed when Lightning stops (``on_exception``), so no finished step is lost.
        """

        def __init__(self, ckpt_dir: Path):
            self.ckpt_dir = Path(ckpt_dir)
            self.signum = _requeue_signal()
            self.requested = False
            self.saved_step = -1
            self._previous: Any = None

        def _handler(self, signum, frame) -> None:  # noqa: ARG002
            log.warning("received %s: checkpoint at the end of this step, then requeue",
                        signal.Signals(signum).name)
            self.requested = True

        def setup(self, trainer, pl_module, stage: str) -> None:
            if os.name == "posix" and self._previous is None:
                try:
                    self._previous = signal.signal(self.signum, self._handler)
                except ValueError:  # not the main thread: no signals here
                    log.debug("not the main thread: %s is not handled", signal.Signals(self.signum).name)

        def teardown(self, trainer, pl_module, stage: str) -> None:
            if self._previous is not None:
                signal.signal(self.signum, self._previous)
                self._previous = None

        def _any_rank(self, trainer, flags: list[bool]) -> list[bool]:
            if trainer.world_size <= 1 or not torch.distributed.is_initialized():
                return flags
            value = torch.tensor([1.0 if f else 0.0 for f in flags], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
            return [bool(v > 0) for v in value.tolist()]

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            requeue, sigterm = self._any_rank(trainer, [self.requested,
                                                        bool(getattr(trainer, "received_sigterm", False))])
            if not (requeue or sigterm):
                return
            step = trainer.global_step
            if self.saved_step != step:
                path = self.ckpt_dir / LAST_CKPT
                trainer.save_checkpoint(path)
                self.saved_step = step
                log.warning("saved %s at step %d before stopping", path, step)
            _flush_loggers(trainer)
            if requeue:
                self._hand_over(trainer)

        def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
            # DDP ranks could stop at different steps here, and saving is collective: single process only
            if isinstance(exception, SIGTERMException) and trainer.world_size == 1 \
                    and self.saved_step != trainer.global_step and trainer.global_step > 0:
                path = self.ckpt_dir / LAST_CKPT
                trainer.save_checkpoint(path)
                self.saved_step = trainer.global_step
                log.warning("saved %s at step %d before stopping (SIGTERM)", path, trainer.global_step)
            if isinstance(exception, SIGTERMException):
                _flush_loggers(trainer)

        def _hand_over(self, trainer) -> None:
            previous = self._previous
            self.teardown(trainer, None, "fit")
            if callable(previous):
                log.info("handing over to the previous %s handler (submitit: requeue)",
                         signal.Signals(self.signum).name)
                previous(self.signum, None)  # submitit rank 0: requeue, then sys.exit; other ranks return
            if trainer.global_rank != 0 and callable(previous):
                # submitit does not stop the other ranks ("it might kill the master task"): wait for the
                # requeue to end the job step, as they would have, but never past the signal delay
                deadline = time.time() + 300
                while time.time() < deadline:
                    time.sleep(1)
            raise SystemExit(128 + int(self.signum))

    return SignalCheckpoint


def signal_checkpoint(ckpt_dir: Path):
    """A :class:`SignalCheckpoint` Lightning callback writing ``ckpt_dir/last.ckpt``."""
    return _signal_checkpoint_callback_class()(ckpt_dir)


# ---------------------------------------------------------------------------------------------- markers
def _rank() -> int:
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def write_failure(run_dir: Path, error: BaseException) -> Path:
    """``<run_dir>/FAILED``: first line ``<ExceptionType>: <message>`` (the leaderboard's reason), then
    where it happened and the traceback."""
    first = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
    task = slurm_task()
    where = task.describe() if task else f"local run on {socket.gethostname()}, rank {_rank()}"
    body = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    path = Path(run_dir) / FAILURE_FILE
    write_text_atomic(path, f"{first}\n{where}\ntime: {time.strftime('%Y-%m-%dT%H:%M:%S')}\n\n{body}")
    return path


def write_interruption(run_dir: Path, how: str) -> Path:
    """``<run_dir>/INTERRUPTED``: first line ``how`` (the leaderboard's reason), then where and when."""
    task = slurm_task()
    where = task.describe() if task else f"local run on {socket.gethostname()}, rank {_rank()}"
    path = Path(run_dir) / INTERRUPTED_FILE
    write_text_atomic(path, f"{how}\n{where}\ntime: {time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    return path


def _keep_as_numbered(marker: Path) -> None:
    """Move ``marker`` to ``<name>.<n>`` (the first free n), keeping the history of earlier attempts."""
    if not marker.is_file():
        return
    n = 1
    while marker.with_name(f"{marker.name}.{n}").exists():
        n += 1
    try:
        os.replace(marker, marker.with_name(f"{marker.name}.{n}"))
        log.info("an earlier attempt left %s; it is now %s.%d", marker.name, marker.name, n)
    except FileNotFoundError:  # another rank moved it first
        pass


def clear_failure(run_dir: Path) -> None:
    """A job that runs again in its run directory (requeue, re-launch) starts unfailed: a ``FAILED`` or
    ``INTERRUPTED`` marker left by an earlier attempt is kept as ``<marker>.<n>`` and a stale "failed"
    or "interrupted" evaluation status is removed."""
    for name in (FAILURE_FILE, INTERRUPTED_FILE):
        _keep_as_numbered(Path(run_dir) / name)
    status = Path(run_dir) / "eval" / "status.json"
    try:
        if json.loads(status.read_text()).get("status") in ("failed", "interrupted"):
            status.unlink()
    except (OSError, ValueError):
        pass


def record_failure_status(run_dir: Path, benchmarks: list[str]) -> None:
    """Record the failure or interruption in ``eval/status.json`` at once (the evaluation's own writer,
    without importing the evaluation stack), so the leaderboard lists the run without waiting for
    ``make eval``."""
    from flash_exp.training.rundir import run_state, write_status

    state = run_state(run_dir)
    write_status(run_dir, state.status, state.reason, benchmarks)


# ---------------------------------------------------------------------------------------------- digests
def state_digest(state: dict[str, Any]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict's tensors, in name order."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_rank_digest(run_dir: Path, trainer, module) -> Path:
    """``<run_dir>/ranks/rank<k>.json``: this rank's final step and the digest of its trainable state
    (LoRA + discriminator). Under DDP every rank must hold the same weights: equal digests."""
    state = module.trainable_state_dict()
    info = {"rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
            "sha256": state_digest(state), "tensors": len(state), "host": socket.gethostname(),
            "slurm": asdict(slurm_task()) if slurm_task() else None}
    path = Path(run_dir) / RANKS_DIR / f"rank{trainer.global_rank}.json"
    write_text_atomic(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- resolvers
def _gpus_per_node(accelerator: str, devices: int) -> int | None:
    """``hydra.launcher.gpus_per_node``: ``trainer.devices`` unless the trainer runs on CPUs."""
    return None if str(accelerator).lower() == "cpu" else int(devices)


def register_resolvers() -> None:
    """``${gpus_per_node:${trainer.accelerator},${trainer.devices}}`` used by conf/hydra/launcher/*.yaml."""
    if not OmegaConf.has_resolver("gpus_per_node"):
        OmegaConf.register_new_resolver("gpus_per_node", _gpus_per_node)


def describe_environment() -> str:
    keys = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE",
            "SLURM_NNODES", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_RESTART_COUNT",
            "CUDA_VISIBLE_DEVICES", "MASTER_ADDR", "MASTER_PORT")
    return " ".join(f"{k}={os.environ[k]}" for k in keys if k in os.environ) or "(no SLURM variables)"


if __name__ == "__main__":  # print what the preflight sees, e.g. `srun python -m flash_exp.training.cluster`
    print(describe_environment())
    t = slurm_task()
    print(t.describe() if t else "not a SLURM task")
    sys.exit(0)
