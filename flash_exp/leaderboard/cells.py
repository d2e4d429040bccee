"""The text of the leaderboard pages, shared by Markdown and HTML: columns, cells, the protocol line,
the sweep summary panel."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flash_exp.leaderboard.anchors import Anchor
from flash_exp.leaderboard.tables import Row, Table, job_order, swept_axes


def sweep_summary(table: Table, sweep: str) -> tuple[list[str], list[list[str]]]:
    """The Markdown panel of a sweep: one row per job, in launch order; its swept values, then FID and
    CLIP at each NFE (header, rows)."""
    rows = [r for r in table.rows if r.sweep == sweep]
    axes_values = swept_axes(rows)
    nfes = sorted({r.nfe for r in rows})
    jobs: dict[str, dict[int, Row]] = defaultdict(dict)
    for row in rows:
        jobs[row.run][row.nfe] = row

    header = [*axes_values, *(f"FID {n} NFE" for n in nfes), *(f"CLIP {n} NFE" for n in nfes)]
    body = []
    for run in sorted(jobs, key=lambda run: job_order(next(iter(jobs[run].values())))):
        by_nfe, first = jobs[run], next(iter(jobs[run].values()))
        body.append([*(first.overrides.get(key, "(default)") for key in axes_values),
                     *(f"{by_nfe[n].fid:.3f}" if n in by_nfe else "-" for n in nfes),
                     *(f"{by_nfe[n].clip:.4f}" if n in by_nfe else "-" for n in nfes)])
    return header, body


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


COLUMNS = ("rank", "model", "sampler", "steps", "NFE", "CFG", "FID", "CLIP", "images", "spec")


ANCHOR_COLUMNS = ("model", "NFE", "FID", "CLIP", "source")


RESTORATION_ORDER = ("psnr", "ssim", "lpips")  # then the task's condition scores, by name


def restoration_columns(table: Table) -> list[str]:
    """The restoration scores present in ``table`` (conditional tasks): PSNR, SSIM, LPIPS first."""
    names = {k for row in table.rows for k in row.restoration}
    return [n for n in RESTORATION_ORDER if n in names] + sorted(names - set(RESTORATION_ORDER))


def table_columns(table: Table) -> list[str]:
    return [*COLUMNS[:8], *restoration_columns(table), *COLUMNS[8:]]


def row_cells(row: Row, restoration: Sequence[str] = ()) -> list[str]:
    scores = ["-" if row.restoration.get(n) is None else f"{row.restoration[n]:.4f}" for n in restoration]
    rank = f"{row.rank}/{row.of}" if row.of > 1 else "-"  # nothing comparable to rank against
    return [rank, row.label, row.sampler, "-" if row.steps is None else str(row.steps), str(row.nfe),
            f"{row.guidance:g}", f"{row.fid:.3f}", f"{row.clip:.4f}", *scores, str(row.num_images),
            row.spec_hash[:12]]


def anchor_cells(a: Anchor) -> list[str]:
    return [a.model, str(a.nfe), "-" if a.fid is None else f"{a.fid:g}", "-" if a.clip is None else f"{a.clip:g}",
            a.source]


def benchmarks(tables: Sequence[Table], anchors: Sequence[Anchor]) -> list[str]:
    """Benchmarks with measured results first, then those with published anchors only."""
    measured = sorted({t.benchmark for t in tables})
    return measured + sorted({a.benchmark for a in anchors} - set(measured))
