"""Training run directories: their files, their state and their evaluation status file.

A run directory holds ``.hydra/config.yaml`` (the composed training config), ``.hydra/overrides.yaml``
(its command-line overrides) and, once training has finished, the student in ``export/`` (a diffusers
LoRA ``pytorch_lora_weights.safetensors``, or a PEFT adapter ``adapter_model.safetensors`` for PixArt).
Single runs live at ``<runs>/<run_name>/<timestamp>/``, sweep jobs at ``<runs>/sweeps/<timestamp>/<job>/``
(the sweep directory holds ``multirun.yaml``). A run is *failed* when it holds a failure marker
file, *interrupted* when a signal stopped it (``INTERRUPTED``: saved, resumable by relaunching),
*unfinished* when it has no export, and *ready* otherwise. A config refused at validation leaves
nothing behind (:func:`discard_unstarted`).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flash_exp.config import BackboneConfig, register_resolvers
from flash_exp.files import write_json_atomic
from flash_exp.metrics.results import STATUS_KIND, status_path
from flash_exp.training.run_lock import LOCK_FILE

CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
EXPORT_DIR = "export"
STUDENT_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
SWEEP_FILE = "multirun.yaml"
FAILURE_MARKERS = ("FAILED", "error.txt")
INTERRUPTED_MARKER = "INTERRUPTED"
READY, UNFINISHED, FAILED, INTERRUPTED = "ready", "unfinished", "failed", "interrupted"
# what Hydra writes into a run directory before the task function runs, and the run's own lock
HYDRA_FILES = (".hydra", "train.log", LOCK_FILE)


@dataclass(frozen=True)
class RunState:
    """``status``: ready | unfinished | failed | interrupted; ``reason``: why it is not ready (empty when ready)."""

    status: str
    reason: str = ""


def find_runs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (including ``root`` itself), sorted."""
    root = Path(root)
    return sorted({p.parent.parent for p in root.rglob(str(CONFIG_FILE))})


def run_state(run_dir: Path) -> RunState:
    """Whether ``run_dir`` can be evaluated; a failure or interruption marker's first line is the reason."""
    for marker, status in [*((m, FAILED) for m in FAILURE_MARKERS), (INTERRUPTED_MARKER, INTERRUPTED)]:
        path = Path(run_dir) / marker
        if path.is_file():
            first = next(iter(path.read_text(errors="replace").strip().splitlines()), "")
            return RunState(status, f"{marker}: {first}" if first else marker)
    if student_file(run_dir) is None:
        return RunState(UNFINISHED, f"no {EXPORT_DIR}/{' or '.join(STUDENT_FILES)}")
    return RunState(READY)


def student_file(run_dir: Path) -> Path | None:
    """The exported student's weights file, or None before the export."""
    for name in STUDENT_FILES:
        path = Path(run_dir) / EXPORT_DIR / name
        if path.is_file():
            return path
    return None


def load_backbone(run_dir: Path) -> BackboneConfig:
    """The run's typed backbone config. Only the ``backbone`` node is resolved (its interpolations see
    the whole config), so a run is evaluable where its training data is not reachable."""
    register_resolvers()
    cfg = OmegaConf.load(Path(run_dir) / CONFIG_FILE)
    plain = OmegaConf.to_container(cfg.backbone, resolve=True)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(BackboneConfig), plain))  # type: ignore[return-value]


def run_task(run_dir: Path) -> str:
    """The run's task name (``t2i`` for runs whose config predates tasks)."""
    cfg = OmegaConf.load(Path(run_dir) / CONFIG_FILE)
    return str(OmegaConf.select(cfg, "task.name", default="t2i"))


def sweep_dir(run_dir: Path) -> Path | None:
    """The sweep directory holding ``run_dir`` as a job, or None for a single run."""
    parent = Path(run_dir).parent
    return parent if (parent / SWEEP_FILE).is_file() else None


def run_overrides(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides as ``{key: value}`` (``+``/``++``/``~`` prefixes dropped)."""
    path = Path(run_dir) / OVERRIDES_FILE
    if not path.is_file():
        return {}
    pairs = {}
    for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
        key, _, value = str(item).partition("=")
        pairs[key.lstrip("+~")] = value
    return pairs


def run_fields(run_dir: Path) -> dict[str, Any]:
    """The run and sweep directories (absolute) that result and status files name."""
    sweep = sweep_dir(run_dir)
    return {"run": str(Path(run_dir).resolve()), "sweep": str(sweep.resolve()) if sweep else None}


def write_status(run_dir: Path, status: str, reason: str, benchmarks: list[str]) -> None:
    """``<run_dir>/eval/status.json``: the run's status as the leaderboard lists it."""
    write_json_atomic(status_path(run_dir), {
        "kind": STATUS_KIND, **run_fields(run_dir), "status": status, "reason": reason,
        "benchmarks": benchmarks, "checked": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })



def discard_unstarted(run_dir: Path) -> bool:
    """Remove ``run_dir`` when it holds only Hydra's own files and the run lock (then its parents that became empty, up
    to the working directory); a directory with anything else in it (an earlier attempt) is kept.
    Returns whether it was removed."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir() or any(p.name not in HYDRA_FILES for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir)
    stop = Path.cwd().resolve()
    parent = run_dir.parent
    while parent != stop and stop in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True
