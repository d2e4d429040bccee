"""Failure and interruption markers in a run directory, read by the evaluation and the leaderboard.

- :func:`write_failure` leaves ``<run_dir>/FAILED`` (first line: the error; then the traceback) when a
  job raises, because SLURM and submitit report a Hydra job that raised as COMPLETED. The evaluation
  (``flash_exp.training.rundir.FAILURE_MARKERS``) and the leaderboard read that marker;
- :func:`write_interruption` leaves ``<run_dir>/INTERRUPTED`` when a signal stopped the run after it
  saved ``last.ckpt`` (the process then exits non-zero); the leaderboard lists the run as
  "interrupted" until a relaunch (or SLURM's requeue) resumes it and :func:`clear_failure` moves the
  marker away.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import traceback
from pathlib import Path

from flash_exp.files import write_text_atomic
from flash_exp.training.slurm import slurm_task

log = logging.getLogger(__name__)

FAILURE_FILE = "FAILED"  # one of flash_exp.training.rundir.FAILURE_MARKERS
INTERRUPTED_FILE = "INTERRUPTED"  # flash_exp.training.rundir.INTERRUPTED_MARKER


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
