"""Build the toy teachers of the chosen stages in order, evaluate each, and record ``tasks.json``."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from flash_exp.config import toy_paths
from flash_exp.toyworld.dataset import load_shards
from flash_exp.toyworld.tasks.adapter_teacher import build_adapter_canny
from flash_exp.toyworld.tasks.evaluation import evaluate_teacher
from flash_exp.toyworld.tasks.faceswap_teacher import build_faceswap
from flash_exp.toyworld.tasks.finetune import load_base
from flash_exp.toyworld.tasks.inpainting_teacher import build_inpainting
from flash_exp.toyworld.tasks.settings import FULL_TASKS, QUICK_TASKS, TASK_STAGES
from flash_exp.toyworld.tasks.superres_teacher import build_superres

BUILDERS: dict[str, Callable] = {
    "inpainting": lambda base, data, out, s, seed: build_inpainting(base, data, out, s, seed),
    "superres": lambda base, data, out, s, seed: build_superres(base, data, out, s, seed),
    "adapter_canny": lambda base, data, out, s, seed: build_adapter_canny(base, data, out, s, seed),
    "faceswap": lambda base, data, out, s, seed: build_faceswap(base, out, s, seed),
}


def _update_info(out: Path, task: str, entry: dict) -> None:
    path = out / toy_paths.TASKS_RECORD
    record = json.loads(path.read_text()) if path.exists() else {}
    record[task] = entry
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def build(root: Path = toy_paths.ASSETS, stages: list[str] | tuple[str, ...] = TASK_STAGES, quick: bool = False,
          seed: int = 0, evaluate: bool = True, log: Callable[[str], None] = print) -> dict:
    """Build the toy teachers of ``stages`` into ``<root>/tasks``; returns the build record."""
    settings = QUICK_TASKS if quick else FULL_TASKS
    out = root / "tasks"
    out.mkdir(parents=True, exist_ok=True)
    base = load_base(root)
    data = load_shards(toy_paths.train_shards(root)) if set(stages) - {"faceswap"} else None
    for stage in TASK_STAGES:
        if stage not in stages:
            continue
        start = time.perf_counter()
        if (out / stage).exists():
            shutil.rmtree(out / stage)
        BUILDERS[stage](base, data, out, settings, seed)
        seconds = time.perf_counter() - start
        entry = {"build_seconds": round(seconds, 1), "settings": asdict(settings), "seed": seed}
        log(f"[toyworld.tasks] {stage}: built in {seconds:.1f} s")
        if evaluate:
            start = time.perf_counter()
            metrics = evaluate_teacher(stage, root, out, settings, seed)
            entry["teacher_metrics"] = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            log(f"[toyworld.tasks] {stage}: teacher on {settings.eval_count} held-out conditions "
                f"({time.perf_counter() - start:.1f} s): {entry['teacher_metrics']}")
        _update_info(out, stage, entry)
    return json.loads((out / toy_paths.TASKS_RECORD).read_text())
