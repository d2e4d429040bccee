"""Whether a run is finished and up to date, so that relaunching a sweep skips it before any model loads.

``<run>/COMPLETE`` (JSON) records the fingerprint of the training config once training and the export
have finished and, once the evaluation after training has finished, the fingerprint of the ``eval``
settings with the result files it wrote. A relaunch whose config has the same fingerprints finds the
export and the results in place and does nothing else; any other relaunch clears the record first
and runs as before (resuming from ``checkpoints/last.ckpt``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flash_exp.config import TrainConfig
from flash_exp.files import write_json_atomic
from flash_exp.metrics.results import EVAL_DIR
from flash_exp.training.rundir import FAILURE_MARKERS, student_file

COMPLETE_FILE = "COMPLETE"
# settings that change neither the trained student nor its scores
UNSCORED_TRAINER_KEYS = ("checkpoint_every", "keep_checkpoints", "sample_every", "log_every",
                         "num_sample_prompts", "resume")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def training_fingerprint(cfg: TrainConfig) -> str:
    """What decides the trained student: every key but the logger, the evaluation and the cadences.
    Only values that differ from the schema's defaults count, so a new key with a default (a later
    version of this code) does not make finished runs look out of date."""
    skipped = ("logger.", "eval.", *(f"trainer.{key}" for key in UNSCORED_TRAINER_KEYS))
    defaults = _flat(asdict(TrainConfig()))
    values = {k: v for k, v in _flat(asdict(cfg)).items()
              if not k.startswith(skipped) and (k not in defaults or defaults[k] != v)}
    return _digest(values)


def evaluation_fingerprint(cfg: TrainConfig) -> str:
    """What decides the evaluation after training (its benchmarks, options and settings)."""
    return _digest(asdict(cfg.eval))


def _read(run_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / COMPLETE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def up_to_date(cfg: TrainConfig, run_dir: Path) -> str | None:
    """Why ``run_dir`` needs nothing more for ``cfg`` (one line), or None when it must run."""
    run_dir = Path(run_dir)
    record = _read(run_dir)
    if (cfg.trainer.resume != "auto" or record.get("training") != training_fingerprint(cfg)
            or student_file(run_dir) is None or any((run_dir / m).exists() for m in FAILURE_MARKERS)):
        return None
    if not cfg.eval.after_train:
        return f"trained ({record.get('steps')} steps) and exported, nothing changed"
    results = record.get("results") or []
    if record.get("evaluation") != evaluation_fingerprint(cfg) or not all((run_dir / r).is_file() for r in results):
        return None
    return f"trained ({record.get('steps')} steps), exported and evaluated ({len(results)} results), nothing changed"


def clear(run_dir: Path) -> None:
    """Forget the record: the run is about to change."""
    (Path(run_dir) / COMPLETE_FILE).unlink(missing_ok=True)


def mark_trained(cfg: TrainConfig, run_dir: Path, steps: int) -> None:
    """Training and the export have finished."""
    write_json_atomic(Path(run_dir) / COMPLETE_FILE, {"training": training_fingerprint(cfg), "steps": steps})


def mark_evaluated(cfg: TrainConfig, run_dir: Path) -> None:
    """The evaluation after training has finished; its result files are listed."""
    run_dir = Path(run_dir)
    results = sorted(str(p.relative_to(run_dir)) for p in (run_dir / EVAL_DIR).glob("*/*.json"))
    write_json_atomic(run_dir / COMPLETE_FILE, {**_read(run_dir), "evaluation": evaluation_fingerprint(cfg),
                                                "results": results})
