"""Evaluation results -> one table per benchmark protocol, rows ranked among equal eval specs.

One table per benchmark *protocol* (equal ``protocol_hash``: same prompts, image count, resolution,
resize, feature extractor, reference set, CLIP model, seed); results of another protocol get their
own table. Inside a table each row is one configuration at one (sampler, NFE, guidance) setting: the
runs whose composed configs differ only in the training seed are one row (mean, 95 % Student t
interval over seeds, n). Its rank is among the rows of equal ``spec_hash`` only. Teacher baselines
shared by several runs appear once. Sweep jobs are labelled by their swept override values.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flash_exp.metrics.registry import optional_scores
from flash_exp.metrics.statistics import Interval, mean_interval
from flash_exp.training.rundir import CONFIG_FILE, run_overrides

# the scores a result may carry besides FID and CLIP (absent from results written before they existed,
# the optional metrics only where the benchmark lists them)
EXTRA_METRICS = ("kid", "precision", "recall", "density", "coverage", *optional_scores())
DRAW_SD = {"fid": "fid_std", "clip_score": "clip_score_std", "kid": "kid_std"}


@dataclass
class Row:
    """One configuration at one sampler setting: the results of its runs that differ only in the
    training seed. ``fid`` and ``clip`` (mean cosine CLIP score) are means over those seeds;
    ``intervals`` holds per metric the mean, sd and 95 % Student t interval over seeds; ``per_seed``
    per metric {training seed: score}; ``draw_sd`` per metric the sd over evaluation draws of the
    lowest seed's result (what a single-seed row shows instead of an interval). ``rank``: 1-based by
    mean FID among the rows of equal ``spec_hash`` (benchmark protocol, sampler, NFE, guidance), ``of``
    rows in that group, whatever their training steps."""

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
    legend: str = ""  # the name in plot legends: method, backbone, experiment and swept values
    rank: int = 1
    of: int = 1
    config_key: str = ""  # the composed config without the seed: rows of equal key are one configuration
    seed: int | None = None  # the training seed of ``run`` (None: a teacher)
    runs: dict[int, str] = field(default_factory=dict)  # training seed -> run directory
    per_seed: dict[str, dict[int, float]] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)  # EXTRA_METRICS, means over seeds
    draw_sd: dict[str, float | None] = field(default_factory=dict)
    draws: int = 1  # evaluation draws behind each of ``run``'s numbers
    method: str | None = None
    backbone: str | None = None
    reference: dict[str, str] = field(default_factory=dict)  # the experiment's paper choice, if any
    gallery: list[Path] = field(default_factory=list)  # the first images of ``run``'s evaluation
    gallery_prompts: list[str] = field(default_factory=list)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.runs)

    @property
    def single_seed(self) -> bool:
        return len(self.runs) <= 1


@dataclass
class Table:
    """All results of one benchmark protocol."""

    benchmark: str
    protocol_hash: str
    protocol: dict[str, Any]
    rows: list[Row] = field(default_factory=list)


def _is_timestamp(value: Any) -> bool:
    return isinstance(value, str) and "${now:" in value


def _without_run_fields(node: Any) -> Any:
    """``node`` with every timestamp interpolation (``${now:...}``) dropped, recursively."""
    if isinstance(node, dict):
        return {k: _without_run_fields(v) for k, v in node.items() if not _is_timestamp(v)}
    if isinstance(node, list):
        return [_without_run_fields(v) for v in node]
    return node


def read_run_config(run: Path) -> dict[str, Any] | None:
    """The run's composed config (``.hydra/config.yaml``, interpolations unresolved), or None."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        return None
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return data if isinstance(data, dict) else None


def configuration_key(config: dict[str, Any]) -> str:
    """What makes two runs one configuration: their composed config with ``seed`` removed and
    run-specific values (timestamps) dropped. Output directories live in ``.hydra/hydra.yaml``, not in
    the composed config, so nothing else is ignored: runs that differ in any other key differ here."""
    rest = {k: v for k, v in config.items() if k != "seed"}
    return json.dumps(_without_run_fields(rest), sort_keys=True, default=str)


def _label(result: dict[str, Any], runs_dir: Path) -> str:
    if result["sampler"] == "teacher":
        name = Path(str(result["model"]["pretrained"])).name
        return name if "teacher" in name.lower() else f"teacher {name}"
    run = Path(result["run"])
    try:
        return str(run.resolve().relative_to(runs_dir.resolve()))
    except ValueError:
        return str(run)


def trained_steps(config: dict[str, Any] | None) -> int | None:
    """The data batches a run trained: ``trainer.max_steps``, else the sum of ``phases.iterations``."""
    if config is None:
        return None
    steps = (config.get("trainer") or {}).get("max_steps")
    iterations = (config.get("phases") or {}).get("iterations")
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
    """Append the swept override values to the label of each sweep job: ``<job dir> (key=value, ...)``;
    the legend names method, backbone, experiment and swept values."""
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
            row.legend = f"{_model_name(row)} · {experiment_name(jobs, sweep)}: {values or Path(row.run).name}"
    for row in rows:
        if not row.legend:
            row.legend = row.label if row.sampler == "teacher" else f"{_model_name(row)}: {row.label}"


def _model_name(row: Row) -> str:
    return " ".join(x for x in (row.method or "flash", row.backbone) if x)


def experiment_name(rows: Sequence[Row], sweep: str) -> str:
    """The experiment a sweep ran (its ``experiment=`` override), else the sweep directory's name."""
    names = {r.overrides.get("experiment") for r in rows} - {None}
    return names.pop() if len(names) == 1 else f"sweep {Path(sweep).name}"


def _result_row(r: dict[str, Any], runs_dir: Path) -> Row:
    """One result file as a row of one seed."""
    student = r["sampler"] == "student"
    config = read_run_config(Path(r["run"])) if student else None
    overrides = run_overrides(Path(r["run"])) if student else {}
    seed = None
    if student:
        seed = int(config.get("seed", 0)) if config else int(overrides.get("seed", 0))
    if config is not None:
        key = configuration_key(config)
    else:  # a teacher (shared by runs) or a run without its config: a configuration of its own
        key = repr(sorted(r["model"].items())) if not student else f"run:{r['run']}"
    per_seed = {m: {seed or 0: float(r[m])} for m in ("fid", "clip_score", *EXTRA_METRICS) if r.get(m) is not None}
    run = Path(r["run"])
    return Row(
        _label(r, runs_dir), r["sampler"], int(r["nfe"]), float(r["guidance"]), float(r["fid"]),
        float(r["clip_score"]), int(r["num_images"]), r["spec_hash"], r["run"], r.get("sweep") if student else None,
        {k: v for k, v in overrides.items() if k != "seed"}, dict(r.get("restoration") or {}),
        trained_steps(config), config_key=key, seed=seed, runs={seed or 0: r["run"]}, per_seed=per_seed,
        draw_sd={m: r.get(sd) for m, sd in DRAW_SD.items()}, draws=len(r.get("draws") or []) or 1,
        method=((config or {}).get("method") or {}).get("name") if config else None,
        backbone=((config or {}).get("backbone") or {}).get("name") if config else None,
        reference={str(k): str(v) for k, v in ((config or {}).get("reference") or {}).items()},
        gallery=[run / g for g in r.get("gallery") or []], gallery_prompts=list(r.get("gallery_prompts") or []))


def _merge_seeds(rows: Sequence[Row]) -> list[Row]:
    """Rows of one configuration (equal ``config_key``) and setting (equal ``spec_hash``) that differ
    only in the training seed -> one row: means over seeds, t intervals, the lowest seed's run as its
    face (label, gallery, evaluation-draw spread). A seed seen twice starts another row."""
    groups: dict[tuple[str, str], list[list[Row]]] = defaultdict(list)
    for row in sorted(rows, key=lambda x: (x.seed is None, x.seed or 0, x.run)):
        bucket = groups[(row.config_key, row.spec_hash)]
        home = next((g for g in bucket if all(m.seed != row.seed for m in g)), None)
        if home is None:
            bucket.append([row])
        else:
            home.append(row)
    merged = []
    for bucket in groups.values():
        for members in bucket:
            face = members[0]
            face.runs = {k: v for m in members for k, v in m.runs.items()}
            face.per_seed = {metric: {k: v for m in members for k, v in m.per_seed.get(metric, {}).items()}
                             for metric in face.per_seed}
            face.intervals = {metric: mean_interval([values[s] for s in sorted(values)])
                              for metric, values in face.per_seed.items()}
            face.fid, face.clip = face.intervals["fid"].mean, face.intervals["clip_score"].mean
            face.metrics = {m: face.intervals[m].mean if m in face.intervals else None for m in EXTRA_METRICS}
            merged.append(face)
    return merged


def build_tables(results: Iterable[dict[str, Any]], runs_dir: Path) -> list[Table]:
    """Group results into one table per (benchmark, protocol_hash); runs that differ only in the
    training seed into one row; rank within equal spec hashes."""
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
        table.rows.append(_result_row(r, runs_dir))
    for table in tables.values():
        table.rows = _merge_seeds(table.rows)
        _label_sweep_jobs(table.rows)
        groups: dict[str, list[Row]] = defaultdict(list)
        for row in table.rows:  # train steps are shown beside the rank, not a reason to refuse one
            groups[row.spec_hash].append(row)
        for rows in groups.values():
            for rank, row in enumerate(sorted(rows, key=lambda x: x.fid), start=1):
                row.rank, row.of = rank, len(rows)
        table.rows.sort(key=lambda x: (x.sampler != "student", x.nfe, x.guidance, x.fid))
    return sorted(tables.values(), key=lambda t: (t.benchmark, -len(t.rows), t.protocol_hash))


def sweep_title(table: Table, sweep: str) -> str:
    """``<experiment>: <swept axes> (<benchmark>)``."""
    rows = [r for r in table.rows if r.sweep == sweep]
    return f"{experiment_name(rows, sweep)}: {', '.join(swept_axes(rows)) or 'no swept axis'} ({table.benchmark})"
