"""A Hydra callback that makes a sweep readable from its console, whichever launcher runs the jobs.

Each job writes ``<job dir>/sweep_status.json`` when it starts and ends (``on_job_start`` /
``on_job_end`` run where the job runs: in this process for the basic launcher, in the job's process for
submitit). The launching process watches those files and prints one line per job start and end, then,
at the end, a summary table: job, swept values, status, and FID / CLIP of the student at each NFE.
It also removes the empty ``.submitit/%j`` folder that submitit's local executor leaves behind.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from flash_exp.files import write_json_atomic
from flash_exp.metrics.results import EVAL_DIR, read_json
from flash_exp.training.completion import COMPLETE_FILE
from flash_exp.training.overrides import sweep_points, swept_values
from flash_exp.training.rundir import FAILURE_MARKERS, OVERRIDES_FILE

STATUS_FILE = "sweep_status.json"
RUNNING, DONE, SKIPPED, FAILED = "running", "done", "skipped (up to date)", "failed"


def _in_sweep(config: DictConfig) -> bool:
    return config.hydra.mode == RunMode.MULTIRUN


def _say(line: str) -> None:
    print(f"[sweep] {line}", flush=True)


def job_status(job_dir: Path, started: float, failed: bool) -> str:
    """How a job that just ended went: failed, skipped (its completion record predates it) or done."""
    if failed or any((job_dir / m).exists() for m in FAILURE_MARKERS):
        return FAILED
    record = job_dir / COMPLETE_FILE
    if record.is_file() and record.stat().st_mtime < started:
        return SKIPPED
    return DONE


def student_scores(job_dir: Path) -> dict[int, tuple[float, float]]:
    """{NFE: (FID, CLIP)} of the student on the job's first benchmark (by name)."""
    scores: dict[int, tuple[float, float]] = {}
    benchmarks = sorted(p for p in (job_dir / EVAL_DIR).glob("*") if p.is_dir())
    for path in sorted(benchmarks[0].glob("student_nfe*.json")) if benchmarks else []:
        result = read_json(path)
        if result is not None and "fid" in result:
            scores[int(result["nfe"])] = (float(result["fid"]), float(result["clip_score"]))
    return scores


def _job_overrides(job_dir: Path) -> list[str]:
    path = job_dir / OVERRIDES_FILE
    return [str(o) for o in OmegaConf.to_container(OmegaConf.load(path))] if path.is_file() else []


def summary_table(sweep_dir: Path) -> list[str]:
    """The end-of-sweep table of every job directory under ``sweep_dir``, in job order."""
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not jobs:
        return []
    values = swept_values([_job_overrides(j) for j in jobs])
    statuses = [(read_json(j / STATUS_FILE) or {}).get("status", "not run") for j in jobs]
    scores = [student_scores(j) for j in jobs]
    nfes = sorted({n for s in scores for n in s})
    width = max(12, *(len(" ".join(v)) for v in values))
    header = f"{'job':>4}  {'swept':<{width}}  {'status':<20}" + "".join(f"  {f'FID/CLIP @{n}':>15}" for n in nfes)
    lines = [header]
    for job, value, status, score in zip(jobs, values, statuses, scores, strict=True):
        cells = "".join(f"  {f'{score[n][0]:.2f}/{score[n][1]:.3f}' if n in score else '-':>15}" for n in nfes)
        lines.append(f"{job.name:>4}  {' '.join(value) or '-':<{width}}  {status:<20}{cells}")
    counts = {s: statuses.count(s) for s in dict.fromkeys(statuses)}
    lines.append(f"{len(jobs)} job(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; in {sweep_dir}")
    return lines


class SweepProgress(Callback):
    """Registered in ``conf/train.yaml`` (``hydra.callbacks``); ``poll_s``: how often the launching
    process looks at the job status files."""

    def __init__(self, poll_s: float = 2.0) -> None:
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._seen: dict[str, str] = {}
        self._total = 0
        self._swept: list[str] = []
        self._since = 0.0
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the launching process
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        params = OmegaConf.to_container(config.hydra.sweeper.params) if config.hydra.sweeper.get("params") else {}
        points = sweep_points(params or {}, [str(o) for o in config.hydra.overrides.task])
        self._swept = [" ".join(v) for v in swept_values(points)]
        self._total = len(points)
        self._since = time.time()  # status files of an earlier launch into this sweep are not news
        _say(f"{self._total} job(s) in {self.sweep_dir}")
        self._watcher = threading.Thread(target=self._watch, name="sweep-progress", daemon=True)
        self._watcher.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        self._poll()
        for line in summary_table(self.sweep_dir):
            _say(line)
        placeholder = self.sweep_dir / ".submitit" / "%j"
        if placeholder.is_dir() and not any(placeholder.iterdir()):
            placeholder.rmdir()

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._poll()

    def _poll(self) -> None:
        with self._lock:  # the watcher thread and, with the basic launcher, the job callbacks
            self._poll_unlocked()

    def _poll_unlocked(self) -> None:
        if not self.sweep_dir.is_dir():
            return
        for path in sorted(self.sweep_dir.glob(f"*/{STATUS_FILE}")):
            state = read_json(path) or {}
            status, job = state.get("status"), path.parent.name
            if status is None or self._seen.get(job) == status or state.get("started", 0.0) < self._since:
                continue
            if self._seen.get(job) is None and status != RUNNING:
                self._announce_start(job, state)  # started and ended between two looks
            self._seen[job] = status
            if status == RUNNING:
                self._announce_start(job, state)
            else:
                took = f" in {state['seconds']:.0f} s" if "seconds" in state else ""
                error = f": {state['error']}" if state.get("error") else ""
                _say(f"job {job}/{self._total} {status}{took}{self._values(job)}{error}")

    def _values(self, job: str) -> str:
        index = int(job) if job.isdigit() else -1
        return f" ({self._swept[index]})" if 0 <= index < len(self._swept) and self._swept[index] else ""

    def _announce_start(self, job: str, state: dict[str, Any]) -> None:
        _say(f"job {job}/{self._total} started{self._values(job)}")

    # ------------------------------------------------------------------ the job's process
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _in_sweep(config):  # a single run has no sweep console, and keeps its directory clean
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        write_json_atomic(job_dir / STATUS_FILE, {"status": RUNNING, "started": time.time()})
        if self._watcher is not None:  # the basic launcher: the job runs in the launching process
            self._poll()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _in_sweep(config):
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        state = read_json(job_dir / STATUS_FILE) or {}
        started = float(state.get("started", time.time()))
        failed = job_return.status == JobStatus.FAILED
        state.update(status=job_status(job_dir, started, failed), seconds=time.time() - started)
        if failed:
            state["error"] = f"{type(job_return._return_value).__name__}: {job_return._return_value}"[:300]
        write_json_atomic(job_dir / STATUS_FILE, state)
        if self._watcher is not None:
            self._poll()

    def __getstate__(self) -> dict[str, Any]:  # submitit pickles the callbacks with the job
        return {"poll_s": self.poll_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)
