"""Result and run-status files of the evaluation.

Layout inside a run directory::

    eval/status.json                          {"kind": "flash_exp.run_status", "status", "reason", ...}
    eval/<benchmark>/<sampler>_nfe<N>.json    one result: FID, KID, precision/recall/density/coverage, CLIP
                                              score (mean over draws, per draw under "draws"), count, wall
                                              time, gallery, spec + hash
    eval/<benchmark>/<sampler>_nfe<N>/        spec.json (which spec made the images) and draw<d>/: draw d's PNGs
    eval/<benchmark>/gallery/<sampler>_nfe<N>/  copies of draw 0's first 8 PNGs, kept with keep_images=false
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULT_KIND = "flash_exp.eval_result"
STATUS_KIND = "flash_exp.run_status"
EVAL_DIR = "eval"
STATUS_FILE = "status.json"


def result_path(run_dir: Path, benchmark: str, setting_name: str) -> Path:
    return Path(run_dir) / EVAL_DIR / benchmark / f"{setting_name}.json"


def images_dir(run_dir: Path, benchmark: str, setting_name: str) -> Path:
    return Path(run_dir) / EVAL_DIR / benchmark / setting_name


def status_path(run_dir: Path) -> Path:
    return Path(run_dir) / EVAL_DIR / STATUS_FILE


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def iter_results(root: Path) -> Iterator[dict[str, Any]]:
    """Every result file under ``root`` (any depth), sorted by path."""
    for path in sorted(Path(root).rglob(f"{EVAL_DIR}/*/*.json")):
        data = read_json(path)
        if data is not None and data.get("kind") == RESULT_KIND:
            yield data


def iter_statuses(root: Path) -> Iterator[dict[str, Any]]:
    """Every run-status file under ``root`` (any depth), sorted by path."""
    for path in sorted(Path(root).rglob(f"{EVAL_DIR}/{STATUS_FILE}")):
        data = read_json(path)
        if data is not None and data.get("kind") == STATUS_KIND:
            yield data


def result_in_place(run_dir: Path, benchmark: str, setting_name: str, digest: str,
                    model: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    """Where the result of one benchmark x sampler setting goes, and the result already there when it
    was computed with this eval-spec hash ``digest`` and this ``model`` (else None: compute it again)."""
    out = result_path(run_dir, benchmark, setting_name)
    existing = read_json(out)
    if existing is not None and existing.get("spec_hash") == digest and existing.get("model") == model:
        return out, existing
    return out, None
