"""Evaluation results -> one table per benchmark protocol, rows ranked among equal eval specs.

One table per benchmark *protocol* (equal ``protocol_hash``: same prompts, image count, resolution,
resize, feature extractor, reference set, CLIP model, seed); results of another protocol get their
own table. Inside a table each row is one (model, sampler, NFE, guidance) result, and its rank is
among the rows of equal ``spec_hash`` only. Teacher baselines shared by several runs appear once.
Sweep jobs are labelled by their swept override values.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flash_exp.training.rundir import CONFIG_FILE, run_overrides


@dataclass
class Row:
    """One measured result. ``fid``: FID; ``clip``: mean cosine CLIP score; ``rank``: 1-based among
    comparable rows, those of equal ``spec_hash`` (benchmark protocol, sampler, NFE, guidance) and equal
    ``steps`` (``of`` rows in that group)."""

    label: str
    sampler: str
    nfe: int
    guidance: float
    fid: float
    clip: float
    num_images: int
    spec_hash: str
    run: str
    sweep: str | None
    overrides: dict[str, str]
    restoration: dict[str, float | None] = field(default_factory=dict)  # conditional tasks' scores
    steps: int | None = None  # data batches the student trained (None: a teacher, or no config)
    legend: str = ""  # the short name in plot legends (default: the label)
    rank: int = 1
    of: int = 1


@dataclass
class Table:
    """All results of one benchmark protocol."""

    benchmark: str
    protocol_hash: str
    protocol: dict[str, Any]
    rows: list[Row] = field(default_factory=list)


def _label(result: dict[str, Any], runs_dir: Path) -> str:
    if result["sampler"] == "teacher":
        name = Path(str(result["model"]["pretrained"])).name
        return name if "teacher" in name.lower() else f"teacher {name}"
    run = Path(result["run"])
    try:
        return str(run.resolve().relative_to(runs_dir.resolve()))
    except ValueError:
        return str(run)


def trained_steps(run: Path) -> int | None:
    """The data batches a run trained: ``trainer.max_steps``, else the sum of ``phases.iterations``."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    iterations = OmegaConf.select(cfg, "phases.iterations", default=None)
    if steps is None and iterations is not None:
        steps = sum(int(n) for n in iterations)
    return None if steps is None else int(steps)


def _sorted_values(values: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def job_order(row: Row) -> tuple[int, str]:
    """Sweep jobs in launch order (``<sweep>/<job number>``), which is the order of the swept values."""
    name = Path(row.run).name
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def swept_axes(rows: Sequence[Row]) -> dict[str, list[str]]:
    """Override keys whose value differs between the jobs of ``rows`` -> their values: numbers sorted,
    anything else in the order the sweep launched them."""
    ordered = sorted(rows, key=job_order)
    keys = sorted({k for row in ordered for k in row.overrides})
    values = {k: [row.overrides.get(k, "(default)") for row in ordered] for k in keys}
    return {k: _sorted_values(v) for k, v in values.items() if len(set(v)) > 1}


def _label_sweep_jobs(rows: Sequence[Row]) -> None:
    """Append the swept override values to the label of each sweep job: ``<job dir> (key=value, ...)``."""
    by_sweep: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.sweep:
            by_sweep[row.sweep].append(row)
    for sweep, jobs in by_sweep.items():
        keys = list(swept_axes(jobs))
        for row in jobs:
            values = ", ".join(f"{k}={row.overrides.get(k, '(default)')}" for k in keys)
            if keys:
                row.label += f" ({values})"
            row.legend = f"{experiment_name(jobs, sweep)}: {values or Path(row.run).name}"


def experiment_name(rows: Sequence[Row], sweep: str) -> str:
    """The experiment a sweep ran (its ``experiment=`` override), else the sweep directory's name."""
    names = {r.overrides.get("experiment") for r in rows} - {None}
    return names.pop() if len(names) == 1 else f"sweep {Path(sweep).name}"


def build_tables(results: Iterable[dict[str, Any]], runs_dir: Path) -> list[Table]:
    """Group results into one table per (benchmark, protocol_hash); rank within equal spec hashes."""
    tables: dict[tuple[str, str], Table] = {}
    seen_teachers: set[tuple[str, str]] = set()
    for r in results:
        if r["sampler"] == "teacher":
            key = (repr(sorted(r["model"].items())), r["spec_hash"])
            if key in seen_teachers:
                continue
            seen_teachers.add(key)
        table = tables.setdefault((r["benchmark"], r["protocol_hash"]),
                                  Table(r["benchmark"], r["protocol_hash"], r["spec"]["protocol"]))
        overrides = run_overrides(Path(r["run"])) if r["sampler"] == "student" else {}
        student = r["sampler"] == "student"
        table.rows.append(Row(_label(r, runs_dir), r["sampler"], int(r["nfe"]), float(r["guidance"]),
                              float(r["fid"]), float(r["clip_score"]), int(r["num_images"]), r["spec_hash"],
                              r["run"], r.get("sweep") if student else None, overrides,
                              dict(r.get("restoration") or {}), trained_steps(Path(r["run"])) if student else None))
    for table in tables.values():
        _label_sweep_jobs(table.rows)
        groups: dict[tuple[str, int | None], list[Row]] = defaultdict(list)
        for row in table.rows:  # a 60-step run is not ranked against a 600-step one
            groups[(row.spec_hash, row.steps)].append(row)
        for rows in groups.values():
            for rank, row in enumerate(sorted(rows, key=lambda x: x.fid), start=1):
                row.rank, row.of = rank, len(rows)
        table.rows.sort(key=lambda x: (x.sampler != "student", x.nfe, x.guidance, x.fid))
    return sorted(tables.values(), key=lambda t: (t.benchmark, -len(t.rows), t.protocol_hash))


def sweep_title(table: Table, sweep: str) -> str:
    """``<experiment>: <swept axes> (<benchmark>)``."""
    rows = [r for r in table.rows if r.sweep == sweep]
    return f"{experiment_name(rows, sweep)}: {', '.join(swept_axes(rows)) or 'no swept axis'} ({table.benchmark})"
