"""The leaderboard's "methods" panel: Flash, LCM and DMD2 students of one protocol side by side.

One row per student run trained with a ``method`` (read from its ``.hydra/config.yaml``): FID and CLIP
at 1, 2 and 4 NFE, the data batches it trained for and its teacher evaluations per batch and training
wall time (the last ``cost/teacher_evals_per_batch`` and ``cost/wall_s`` of its ``metrics.csv``), then
the teacher (with CFG) at 1, 2, 4 NFE and at its largest measured budget. Rows are duck-typed leaderboard rows (``sampler``, ``run``,
``nfe``, ``fid``, ``clip``, ``label``, ``guidance``).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

PANEL_NFE = (1, 2, 4)


def run_costs(run: Path) -> dict[str, Any]:
    """``method``, ``batches`` (global step of the last checkpoint), ``teacher_evals`` and ``wall_s``
    of a training run directory; None for what the run does not record."""
    cfg_path = run / ".hydra" / "config.yaml"
    method = OmegaConf.select(OmegaConf.load(cfg_path), "method.name", default="flash") if cfg_path.is_file() else None
    last: dict[str, str] = {}
    metrics = run / "metrics.csv"
    if metrics.is_file():
        with open(metrics) as f:
            for row in csv.DictReader(f):
                last.update({k: v for k, v in row.items() if v not in ("", None)})
    ckpt = run / "checkpoints" / "last.ckpt"
    batches = None
    if ckpt.is_file():
        import torch

        batches = int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])

    def number(key: str) -> float | None:
        return float(last[key]) if key in last else None

    return {"method": method, "batches": batches, "teacher_evals": number("cost/teacher_evals_per_batch"),
            "wall_s": number("cost/wall_s")}


def methods_panel(rows: Sequence[Any]) -> tuple[list[str], list[list[str]]] | None:
    """(header, body) of the panel for one protocol's rows; None without a non-Flash student."""
    by_run: dict[str, dict[int, Any]] = defaultdict(dict)
    for row in rows:
        if row.sampler == "student":
            by_run[row.run][row.nfe] = row
    costs = {run: run_costs(Path(run)) for run in by_run}
    if not any(c["method"] not in (None, "flash") for c in costs.values()):
        return None

    def fmt(value: float | None, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    header = ["method", "run", *(f"FID {n}" for n in PANEL_NFE), *(f"CLIP {n}" for n in PANEL_NFE),
              "data batches", "teacher evals / batch", "train wall s"]
    body = []
    for run in sorted(by_run, key=lambda r: (str(costs[r]["method"]), r)):
        c, by_nfe = costs[run], by_run[run]
        label = next(iter(by_nfe.values())).label
        body.append([str(c["method"]), label, *(fmt(by_nfe[n].fid if n in by_nfe else None, ".3f") for n in PANEL_NFE),
                     *(fmt(by_nfe[n].clip if n in by_nfe else None, ".4f") for n in PANEL_NFE),
                     fmt(c["batches"], "d"), fmt(c["teacher_evals"], ".2f"), fmt(c["wall_s"], ".0f")])
    teachers = [r for r in rows if r.sampler == "teacher"]
    if teachers:
        at = {r.nfe: r for r in teachers}
        best = at[max(at)]
        body.append(["teacher", f"{best.label}; at its budget ({best.nfe} NFE, CFG {best.guidance:g}): "
                     f"FID {best.fid:.3f}, CLIP {best.clip:.4f}",
                     *(fmt(at[n].fid if n in at else None, ".3f") for n in PANEL_NFE),
                     *(fmt(at[n].clip if n in at else None, ".4f") for n in PANEL_NFE), "-", "-", "-"])
    return header, body
