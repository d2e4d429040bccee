"""Paired comparisons of a sweep's values with the paper's choice of its axis, and the "Design
choices" summary.

An experiment names the paper's choice (``reference: {timesteps: mixture}``, carried into each job's
config). Per NFE, every other configuration of the sweep is paired with the reference configuration
that has the same other overrides, training seed by training seed; the differences give a mean, a
95 % Student t interval, a verdict and the seeds that would resolve the observed mean difference
(:mod:`flash_exp.metrics.statistics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flash_exp.config.reference import normalise_value
from flash_exp.leaderboard.tables import Row, Table, experiment_name
from flash_exp.metrics.statistics import (
    BETTER,
    MAX_SEEDS_SEARCHED,
    WORSE,
    PairedComparison,
    paired_comparison,
)

VERDICT_NFE = (4, 1)


@dataclass(frozen=True)
class Comparison:
    """One swept ``value`` against the sweep's reference ``key=reference`` at ``nfe`` on one metric."""

    key: str
    reference: str
    value: str
    nfe: int
    candidate: Row
    paired: PairedComparison


def sweep_reference(rows: Sequence[Row]) -> tuple[str, str] | None:
    """(key, value) of the paper's choice named by the sweep's configs, when the sweep varies that key."""
    references = {tuple(sorted(r.reference.items())) for r in rows if r.reference}
    if len(references) != 1:
        return None
    ((key, value), *_) = references.pop()
    values = {normalise_value(r.overrides[key]) for r in rows if key in r.overrides}
    return (key, normalise_value(value)) if len(values) > 1 else None


def sweep_comparisons(table: Table, sweep: str, metric: str = "fid") -> list[Comparison]:
    """Every non-reference configuration of ``sweep`` against its reference configuration (equal other
    overrides, equal NFE and guidance), paired by training seed; empty without a reference."""
    rows = [r for r in table.rows if r.sweep == sweep and r.sampler == "student"]
    found = sweep_reference(rows)
    if found is None:
        return []
    key, value = found

    def rest(row: Row) -> tuple:
        return tuple(sorted((k, normalise_value(v)) for k, v in row.overrides.items() if k != key))

    references = {(rest(r), r.nfe, r.guidance): r for r in rows if normalise_value(r.overrides.get(key, "")) == value}
    out = []
    for row in rows:
        ref = references.get((rest(row), row.nfe, row.guidance))
        if ref is None or ref is row or metric not in row.per_seed or metric not in ref.per_seed:
            continue
        paired = paired_comparison(metric, row.per_seed[metric], ref.per_seed[metric])
        if paired is not None:
            out.append(Comparison(key, value, row.overrides.get(key, "(default)"), row.nfe, row, paired))
    return sorted(out, key=lambda c: (c.nfe, c.candidate.run))


def summary(comparisons: Sequence[Comparison]) -> str:
    """The verdict on the paper's choice at one NFE: confirmed (every other value is worse),
    contradicted (some value is better), or not resolved (with the seeds each open pair would need)."""
    if not comparisons:
        return "-"
    better = [c for c in comparisons if c.paired.verdict == BETTER]
    worse = [c for c in comparisons if c.paired.verdict == WORSE]
    open_ = [c for c in comparisons if c.paired.verdict not in (BETTER, WORSE)]
    n = max(c.paired.interval.n for c in comparisons)
    if better:
        text = "contradicted: " + ", ".join(f"{c.value} better" for c in better)
        return text + (f"; {len(worse)} of {len(comparisons)} worse" if worse else "")
    if not open_:
        return f"confirmed: all {len(worse)} others worse"

    def needs(c: Comparison) -> str:
        return f"{c.value} needs {seeds_needed_text(c.paired)}"

    head = f"not resolved with {n} seed{'s' if n != 1 else ''}"
    if worse:
        head = f"{len(worse)} of {len(comparisons)} worse; " + head
    return f"{head} ({'; '.join(needs(c) for c in open_)})"


@dataclass(frozen=True)
class DesignChoice:
    """One row of the "Design choices" table."""

    experiment: str
    benchmark: str
    reference: str  # key=value
    best: str  # the value with the lowest mean FID at the largest verdict NFE measured, and that FID
    seeds: int
    fid_verdicts: dict[int, str]
    clip_verdicts: dict[int, str]


def _best(rows: Sequence[Row], key: str) -> tuple[str, int | None]:
    nfes = [n for n in VERDICT_NFE if any(r.nfe == n for r in rows)] or sorted({r.nfe for r in rows})[-1:]
    if not nfes:
        return "-", None
    at = [r for r in rows if r.nfe == nfes[0]]
    best = min(at, key=lambda r: r.fid)
    return f"{best.overrides.get(key, '(default)')} (FID {best.fid:.3f} at {nfes[0]} NFE)", nfes[0]


def design_choices(tables: Sequence[Table]) -> list[DesignChoice]:
    """One row per sweep that names a reference, over every table (benchmark protocol)."""
    out = []
    for table in tables:
        for sweep in sorted({r.sweep for r in table.rows if r.sweep}):
            rows = [r for r in table.rows if r.sweep == sweep and r.sampler == "student"]
            found = sweep_reference(rows)
            if found is None:
                continue
            key, value = found
            fid, clip = sweep_comparisons(table, sweep, "fid"), sweep_comparisons(table, sweep, "clip_score")
            best, _ = _best(rows, key)
            out.append(DesignChoice(
                experiment_name(rows, sweep), table.benchmark, f"{key}={value}", best, max(len(r.runs) for r in rows),
                {n: summary([c for c in fid if c.nfe == n]) for n in VERDICT_NFE},
                {n: summary([c for c in clip if c.nfe == n]) for n in VERDICT_NFE}))
    return out


DESIGN_COLUMNS = ("experiment", "benchmark", "paper's choice", "best measured", "seeds",
                  "FID ↓ verdict at 4 NFE", "FID ↓ verdict at 1 NFE", "CLIP ↑ verdict at 4 NFE")


def design_cells(choice: DesignChoice) -> list[str]:
    return [choice.experiment, choice.benchmark, choice.reference, choice.best, str(choice.seeds),
            choice.fid_verdicts[4], choice.fid_verdicts[1], choice.clip_verdicts[4]]


def seeds_needed_text(p: PairedComparison) -> str:
    """The seeds that would resolve ``p``; "a 2nd seed" without a spread (one pair), "> 10000" when no
    number searched resolves it (a mean difference of about 0)."""
    if p.interval.sd is None:
        return "a 2nd seed"
    return str(p.seeds_needed) if p.seeds_needed is not None else f"> {MAX_SEEDS_SEARCHED}"


PAIRED_COLUMNS = ("value", "NFE", "metric", "seeds", "difference per seed (value - paper's choice)",
                  "mean difference", "95 % interval", "verdict", "seeds needed")


def paired_cells(c: Comparison) -> list[str]:
    p = c.paired
    metric = {"fid": "FID ↓", "clip_score": "CLIP ↑"}.get(p.metric, p.metric)
    digits = 3 if p.metric == "fid" else 4
    interval = "-" if p.interval.low is None else f"[{p.interval.low:+.{digits}f}, {p.interval.high:+.{digits}f}]"
    return [c.value, str(c.nfe), metric, ",".join(str(s) for s in p.seeds),
            " ".join(f"{d:+.{digits}f}" for d in p.differences), f"{p.interval.mean:+.{digits}f}", interval,
            p.verdict, seeds_needed_text(p)]
