"""Training run directories as the evaluation sees them.

A run directory holds ``.hydra/config.yaml`` (the composed training config), ``.hydra/overrides.yaml``
(its command-line overrides) and, once training has finished, the student in ``export/`` (a diffusers
LoRA ``pytorch_lora_weights.safetensors``, or a PEFT adapter ``adapter_model.safetensors`` for PixArt).
Single runs live at ``<runs>/<run_name>/<timestamp>/``, sweep jobs at ``<runs>/sweeps/<timestamp>/<job>/``
(the sweep directory holds ``multirun.yaml``). A run is *failed* when it holds a failure marker
file, *unfinished* when it has no export, and *ready* otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from flash_exp.config import BackboneConfig, register_resolvers

CONFIG_FILE = Path(".hydra") / "config.yaml"
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
EXPORT_DIR = "export"
STUDENT_FILES = ("pytorch_lora_weights.safetensors", "adapter_model.safetensors")
SWEEP_FILE = "multirun.yaml"
FAILURE_MARKERS = ("FAILED", "error.txt")
READY, UNFINISHED, FAILED = "ready", "unfinished", "failed"


@dataclass(frozen=True)
class RunState:
    """``status``: ready | unfinished | failed; ``reason``: why it is not ready (empty when ready)."""

    status: str
    reason: str = ""


def find_runs(root: Path) -> list[Path]:
    """Every run directory under ``root`` (including ``root`` itself), sorted."""
    root = Path(root)
    return sorted({p.parent.parent for p in root.rglob(str(CONFIG_FILE))})


def run_state(run_dir: Path) -> RunState:
    """Whether ``run_dir`` can be evaluated; a failure marker's first line is the reason."""
    for marker in FAILURE_MARKERS:
        path = Path(run_dir) / marker
        if path.is_file():
            first = next(iter(path.read_text(errors="replace").strip().splitlines()), "")
            return RunState(FAILED, f"{marker}: {first}" if first else marker)
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
