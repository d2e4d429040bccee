"""The text of the leaderboard pages, shared by Markdown and HTML: columns, cells, the protocol line,
the sweep summary panel."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash_exp.leaderboard.anchors import Anchor
from flash_exp.leaderboard.tables import Row, Table, job_order, swept_axes
from flash_exp.metrics.registry import optional_scores
from flash_exp.metrics.statistics import arrow

# column names of the optional metrics' scores (the result key where none is given)
SCORE_LABELS = {"cmmd": "CMMD", "fd_dinov2": "FD-DINOv2", "vendi": "Vendi", "lpips_diversity": "LPIPS diversity",
                "imagereward": "ImageReward", "pickscore": "PickScore", "hpsv21": "HPSv2.1", "aesthetic": "Aesthetic"}


def sweep_summary(table: Table, sweep: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown panel of a sweep: one row per configuration (its lowest seed's job), in launch
    order; its swept values and seeds, then FID and CLIP at each NFE, ± the half-width of the 95 % t
    interval over seeds where there are several (header, rows)."""
    rows = [r for r in table.rows if r.sweep == sweep]
    axes_values = swept_axes(rows)
    nfes = sorted({r.nfe for r in rows})
    jobs: dict[str, dict[int, Row]] = defaultdict(dict)
    for row in rows:
        jobs[row.run][row.nfe] = row

    header = [*axes_values, "seeds", *(f"FID ↓ {n} NFE" for n in nfes), *(f"CLIP ↑ {n} NFE" for n in nfes)]
    body = []
    for run in sorted(jobs, key=lambda run: job_order(next(iter(jobs[run].values())))):
        by_nfe, first = jobs[run], next(iter(jobs[run].values()))
        body.append([*(first.overrides.get(key, "(default)") for key in axes_values), str(len(first.runs)),
                     *(with_interval(by_nfe[n], "fid", 3) if n in by_nfe else "-" for n in nfes),
                     *(with_interval(by_nfe[n], "clip_score", 4) if n in by_nfe else "-" for n in nfes)])
    return header, body


def with_interval(row: Row, metric: str, digits: int) -> str:
    """``mean ± half-width`` of the 95 % t interval over seeds; the mean alone for one seed."""
    interval = row.intervals[metric]
    half = interval.half_width
    return f"{interval.mean:.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def sweep_location(sweep: str, runs_dir: Path) -> str:
    """The sweep directory relative to ``runs_dir`` (as recorded when it lies elsewhere)."""
    try:
        return str(Path(sweep).resolve().relative_to(runs_dir.resolve()))
    except ValueError:
        return sweep


def protocol_line(p: dict[str, Any], protocol_hash: str) -> str:
    fid, clip = p["fid"], p["clip"]
    prefix = f', prefix "{clip["text_prefix"]}"' if clip["text_prefix"] else ""
    task = f"task {p['task']}, held-out conditions; " if p.get("task") else ""
    return (f"{task}{p['num_images']} images, eval_res {p['eval_res']} ({p['resize']}), seed {p['seed']}; "
            f"FID {fid['implementation']} {fid['mode']}, features {fid['features']['name']} "
            f"({fid['features']['weights_sha256'][:8]}), reference {fid['reference']['count']} images; "
            f"CLIP {clip['model']}/{clip['pretrained']} ({clip['weights_sha256'][:8]}{prefix}); "
            f"prompts {p['prompt_set_sha256'][:12]}; protocol {protocol_hash[:12]}")


INTERVALS_ANCHOR = "intervals"
INTERVALS_TEXT = (
    "Each row is one configuration: the runs whose composed configs (`.hydra/config.yaml`) differ only in "
    "the training seed. A score is their mean; its 95 % interval is the Student t interval over training "
    "seeds (mean ± t(0.975, n-1) · sd / √n, sample sd), n the number of seeds. A configuration run with one "
    "seed has no such interval: it is marked single-seed and shows the sd of its score over evaluation draws "
    "(other prompts and noise) where the evaluation drew more than once — that spread is evaluation noise "
    "only, not training noise, so a difference between single-seed rows smaller than a few of these is no "
    "finding. Paired differences (Design choices, each sweep's comparison table) pair runs of equal training "
    "seed (same data order and noise): value minus the paper's choice, seed by seed, with the t interval of "
    "those differences. Verdict: better or worse when that interval excludes 0 (lower FID and KID, higher "
    "CLIP, precision and recall are better), else not resolved with n seeds; seeds needed is the smallest n "
    "with t(0.975, n-1) · sd / √n < |mean difference| at the observed mean and sd of the differences.")
SPEC_TEXT = (
    "spec: the first 12 hex digits of the eval spec's sha256, which covers the benchmark protocol (prompt "
    "set, image count, resolution and resize, evaluation seed, FID implementation, feature extractor and "
    "reference set, CLIP model) and the sampler (student or teacher, NFE, guidance, scheduler, resolution); "
    "rows are ranked only against rows of equal spec, whatever their train steps (shown beside the rank).")


ANCHOR_COLUMNS = ("model", "NFE", "FID ↓", "CLIP ↑", "source")


RESTORATION_ORDER = ("psnr", "ssim", "lpips")  # then the task's condition scores, by name


def restoration_columns(table: Table) -> list[str]:
    """The restoration scores present in ``table`` (conditional tasks): PSNR, SSIM, LPIPS first."""
    names = {k for row in table.rows for k in row.restoration}
    return [n for n in RESTORATION_ORDER if n in names] + sorted(names - set(RESTORATION_ORDER))


def metric_present(table: Table, metric: str) -> bool:
    return any(r.metrics.get(metric) is not None for r in table.rows)


def optional_columns(table: Table) -> list[str]:
    """The optional metrics' scores present in ``table`` (metrics.registry order)."""
    return [key for key in optional_scores() if metric_present(table, key)]


def table_columns(table: Table) -> list[str]:
    extra = [f"KID {arrow('kid')}"] if metric_present(table, "kid") else []
    optional = [f"{SCORE_LABELS.get(k, k)} {arrow(k)}" for k in optional_columns(table)]
    return ["rank", "model", "sampler", "train steps", "NFE", "CFG", f"FID {arrow('fid')}", "FID 95 % interval",
            f"CLIP {arrow('clip_score')}", f"recall {arrow('recall')}", *extra, *optional,
            *restoration_columns(table), "seeds", "images", "spec"]


def spread_cell(row: Row, metric: str, digits: int, link: str) -> str:
    """The 95 % t interval over seeds; for a single-seed student the sd over evaluation draws, marked
    single-seed (``link``: where the page explains it); a teacher (no training seed) its draw sd only."""
    interval = row.intervals.get(metric)
    if interval is not None and interval.low is not None:
        return f"[{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
    mark = f", {link}" if row.sampler == "student" else ""
    sd = row.draw_sd.get(metric)
    if sd is not None:
        over = f"{row.draws} draws" if row.draws > 1 else "draws"
        return f"±{sd:.{digits}f} sd over {over}{mark}"
    return f"one draw{mark}"


def _score(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def row_cells(row: Row, restoration: Sequence[str] = (), kid: bool = False, link: str = "single-seed",
              optional: Sequence[str] = ()) -> list[str]:
    """The cells of ``row`` under :func:`table_columns`; ``optional``: :func:`optional_columns` of its table."""
    scores = ["-" if row.restoration.get(n) is None else f"{row.restoration[n]:.4f}" for n in restoration]
    rank = f"{row.rank}/{row.of}" if row.of > 1 else "-"  # nothing comparable to rank against
    seeds = f"{len(row.runs)} ({','.join(str(s) for s in row.seeds)})" if row.sampler == "student" else "-"
    return [rank, row.label, row.sampler, "-" if row.steps is None else str(row.steps), str(row.nfe),
            f"{row.guidance:g}", f"{row.fid:.3f}", spread_cell(row, "fid", 3, link), f"{row.clip:.4f}",
            _score(row.metrics.get("recall"), 3), *([_score(row.metrics.get("kid"), 4)] if kid else []),
            *(_score(row.metrics.get(k), 4) for k in optional), *scores,
            seeds, str(row.num_images), row.spec_hash[:12]]


PUBLISHED_ONLY = "published figures only (no run here was scored on it)"
STATUS_COLUMNS = ("run", "status", "reason", "what to run")
NOT_EVALUATED = "not evaluated"


def status_cells(status: dict[str, Any]) -> list[str]:
    """A run without results; a finished one names the command that evaluates it."""
    command = f"python -m flash_exp.evaluate run_dir={status['run']}" if status["status"] == NOT_EVALUATED else "-"
    return [str(status["run"]), str(status["status"]), str(status.get("reason") or ""), command]


def anchor_cells(a: Anchor) -> list[str]:
    return [a.model, str(a.nfe), "-" if a.fid is None else f"{a.fid:g}", "-" if a.clip is None else f"{a.clip:g}",
            a.source]


def benchmarks(tables: Sequence[Table], anchors: Sequence[Anchor]) -> list[str]:
    """Benchmarks with measured results first, then those with published anchors only."""
    measured = sorted({t.benchmark for t in tables})
    return measured + sorted({a.benchmark for a in anchors} - set(measured))
