"""``leaderboard.md``: the tables, sweep summaries, methods panels and published anchors as Markdown."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flash_exp.leaderboard.anchors import Anchor
from flash_exp.leaderboard.cells import (
    ANCHOR_COLUMNS,
    INTERVALS_ANCHOR,
    INTERVALS_TEXT,
    PUBLISHED_ONLY,
    SPEC_TEXT,
    STATUS_COLUMNS,
    anchor_cells,
    benchmarks,
    metric_present,
    optional_columns,
    protocol_line,
    restoration_columns,
    row_cells,
    status_cells,
    sweep_location,
    sweep_summary,
    table_columns,
)
from flash_exp.leaderboard.methods_panel import methods_panel
from flash_exp.leaderboard.tables import Table, sweep_title
from flash_exp.leaderboard.verdicts import (
    DESIGN_COLUMNS,
    PAIRED_COLUMNS,
    design_cells,
    design_choices,
    paired_cells,
    sweep_comparisons,
)


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def render_markdown(tables: Sequence[Table], anchors: Sequence[Anchor], statuses: Sequence[dict[str, Any]],
                    runs_dir: Path) -> str:
    lines = ["# flash_exp leaderboard", "",
             f"Results under `{runs_dir}`. One table per evaluation protocol; ranks compare rows of equal "
             "eval spec only. FID: clean-fid; CLIP: mean cosine similarity; ↓ lower is better, ↑ higher is "
             f"better. Intervals: 95 % Student t over training seeds ([how](#{INTERVALS_ANCHOR})). "
             "Plots and images: `leaderboard.html`.", "", SPEC_TEXT, ""]
    choices = design_choices(tables)
    if choices:
        lines += ["## Design choices", "",
                  "Each experiment's values against the paper's choice of its axis, paired by training seed "
                  f"([intervals and verdicts](#{INTERVALS_ANCHOR})).", ""]
        lines += md_table(DESIGN_COLUMNS, (design_cells(c) for c in choices)) + [""]
    link = f"[single-seed](#{INTERVALS_ANCHOR})"
    measured = {t.benchmark for t in tables}
    for bench in benchmarks(tables, anchors):
        lines += [f"## {bench}" if bench in measured else f"## {bench}: {PUBLISHED_ONLY}", ""]
        for table in (t for t in tables if t.benchmark == bench):
            lines += [f"Protocol: {protocol_line(table.protocol, table.protocol_hash)}", ""]
            cells = (row_cells(r, restoration_columns(table), metric_present(table, "kid"), link, optional_columns(table))
                     for r in table.rows)
            lines += md_table(table_columns(table), cells) + [""]
            for sweep in sorted({r.sweep for r in table.rows if r.sweep}):
                header, body = sweep_summary(table, sweep)
                lines += [f"### {sweep_title(table, sweep)}", "", f"Sweep `{sweep_location(sweep, runs_dir)}`", ""]
                lines += md_table(header, body) + [""]
                paired = sweep_comparisons(table, sweep, "fid") + sweep_comparisons(table, sweep, "clip_score")
                if paired:
                    lines += [f"Paired differences to the paper's choice {paired[0].key}={paired[0].reference} "
                              f"([how](#{INTERVALS_ANCHOR})):", ""]
                    lines += md_table(PAIRED_COLUMNS, (paired_cells(c) for c in paired)) + [""]
            panel = methods_panel(table.rows)
            if panel is not None:
                lines += ["### Methods", ""] + md_table(*panel) + [""]
        bench_anchors = [a for a in anchors if a.benchmark == bench]
        if bench_anchors:
            lines += ["Published anchors (not measured here; their protocol is not fully published):", ""]
            lines += md_table(ANCHOR_COLUMNS, (anchor_cells(a) for a in bench_anchors)) + [""]
    if statuses:
        lines += ["## Runs without results", ""]
        lines += md_table(STATUS_COLUMNS, (status_cells(s) for s in statuses))
        lines += [""]
    lines += ["## Intervals", "", INTERVALS_TEXT, ""]
    return "\n".join(lines)
