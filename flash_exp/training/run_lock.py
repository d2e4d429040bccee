"""One live run per run directory: ``<run_dir>/RUNNING.lock``.

The first process of a run (global rank 0; other ranks of the same job share its directory) holds an
exclusive ``flock`` on the lock file for as long as it runs and writes its PID, host, SLURM job id
and start time into it. A second run in the same directory is refused with
:class:`RunDirectoryLocked`, naming the first one's PID and host, and the ``.hydra/*.yaml`` files
Hydra rewrote for the refused run are put back as the live run wrote them.

A lock left by a process that is gone is taken over: on the same host the kernel released its
``flock`` (and its PID is dead); a requeued SLURM job (same job id) takes over its own lock from
another node. A lock written on another host by another job cannot be checked from here: the
message says which file to delete when that run has ended.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flash_exp.files import write_text_atomic

LOCK_FILE = "RUNNING.lock"
HYDRA_DIR = ".hydra"


class RunDirectoryLocked(RuntimeError):
    """Another live run holds the run directory."""


def _slurm_job() -> str | None:
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return job


def is_first_process() -> bool:
    """Whether this process is global rank 0 of its job (the one that locks the run directory)."""
    return all(os.environ.get(key, "0") in ("", "0") for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _hydra_snapshot(run_dir: Path) -> dict[str, str]:
    directory = run_dir / HYDRA_DIR
    return {p.name: p.read_text() for p in sorted(directory.glob("*.yaml"))} if directory.is_dir() else {}


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
    try:
        holder = json.loads(raw.decode()) if raw.strip() else None
    except (ValueError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _write_holder(fd: int, run_dir: Path) -> None:
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "slurm_job": _slurm_job(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "hydra": _hydra_snapshot(run_dir)}
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(holder, indent=2) + "\n").encode())
    os.fsync(fd)


def _stale(holder: dict[str, Any], flocked: bool) -> bool:
    """Whether the process that wrote ``holder`` is known to be gone (or is this job, requeued)."""
    if holder.get("host") == socket.gethostname():
        return flocked or not pid_alive(int(holder.get("pid", -1)))
    return holder.get("slurm_job") is not None and holder.get("slurm_job") == _slurm_job()


def _refusal(path: Path, holder: dict[str, Any] | None) -> RunDirectoryLocked:
    if holder is None:
        return RunDirectoryLocked(f"another run is using {path.parent} (it holds {path}); use another "
                                  "hydra.run.dir, or wait for it to end")
    job = f", SLURM job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return RunDirectoryLocked(
        f"another run is using {path.parent}: PID {holder.get('pid')} on host {holder.get('host')}{job}, "
        f"started {holder.get('started')}. Use another hydra.run.dir, or wait for it to end; if that process "
        f"is gone (another host cannot be checked from here), delete {path}")


def _restore_hydra(run_dir: Path, holder: dict[str, Any] | None) -> None:
    """Put back the ``.hydra/*.yaml`` of the live run (Hydra rewrote them for the refused one)."""
    for name, text in ((holder or {}).get("hydra") or {}).items():
        target = run_dir / HYDRA_DIR / Path(name).name
        write_text_atomic(target, text)


def acquire(run_dir: Path) -> int:
    """Lock ``run_dir`` for this process; returns the open lock file descriptor (see :func:`release`).

    Raises :class:`RunDirectoryLocked` naming the live holder's PID and host."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        flocked = True
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EACCES):  # a live process holds it
            holder = _read_holder(fd)
            os.close(fd)
            _restore_hydra(run_dir, holder)
            raise _refusal(path, holder) from None
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP):
            os.close(fd)
            raise
        flocked = False  # no flock on this file system: the holder's PID decides
    holder = _read_holder(fd)
    if holder is not None and not _stale(holder, flocked):
        os.close(fd)
        _restore_hydra(run_dir, holder)
        raise _refusal(path, holder)
    _write_holder(fd, run_dir)
    return fd


def release(run_dir: Path, fd: int) -> None:
    """Remove the lock file and close (unlock) ``fd``."""
    try:
        (run_dir / LOCK_FILE).unlink(missing_ok=True)
    finally:
        os.close(fd)


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the block (rank 0 only; other ranks share it)."""
    if not is_first_process():
        yield
        return
    run_dir = Path(run_dir)
    fd = acquire(run_dir)
    try:
        yield
    finally:
        release(run_dir, fd)
