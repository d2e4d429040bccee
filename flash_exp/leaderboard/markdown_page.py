"""``leaderboard.md``: the tables, sweep summaries, methods panels and published anchors as Markdown."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flash_exp.leaderboard.anchors import Anchor
from flash_exp.leaderboard.cells import (
    ANCHOR_COLUMNS,
    anchor_cells,
    benchmarks,
    protocol_line,
    restoration_columns,
    row_cells,
    sweep_location,
    sweep_summary,
    table_columns,
)
from flash_exp.leaderboard.methods_panel import methods_panel
from flash_exp.leaderboard.tables import Table, sweep_title


def md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def render_markdown(tables: Sequence[Table], anchors: Sequence[Anchor], statuses: Sequence[dict[str, Any]],
                    runs_dir: Path) -> str:
    lines = ["# flash_exp leaderboard", "",
             f"Results under `{runs_dir}`. One table per evaluation protocol; ranks compare rows of equal "
             "eval spec only. FID: clean-fid; CLIP: mean cosine similarity. Plots: `leaderboard.html`.", ""]
    for bench in benchmarks(tables, anchors):
        lines += [f"## {bench}", ""]
        for table in (t for t in tables if t.benchmark == bench):
            lines += [f"Protocol: {protocol_line(table.protocol, table.protocol_hash)}", ""]
            extra = restoration_columns(table)
            lines += md_table(table_columns(table), (row_cells(r, extra) for r in table.rows)) + [""]
            for sweep in sorted({r.sweep for r in table.rows if r.sweep}):
                header, body = sweep_summary(table, sweep)
                lines += [f"### {sweep_title(table, sweep)}", "", f"Sweep `{sweep_location(sweep, runs_dir)}`", ""]
                lines += md_table(header, body) + [""]
            panel = methods_panel(table.rows)
            if panel is not None:
                lines += ["### Methods", ""] + md_table(*panel) + [""]
        bench_anchors = [a for a in anchors if a.benchmark == bench]
        if bench_anchors:
            lines += ["Published anchors (not measured here; their protocol is not fully published):", ""]
            lines += md_table(ANCHOR_COLUMNS, (anchor_cells(a) for a in bench_anchors)) + [""]
    if statuses:
        lines += ["## Runs without results", ""]
        lines += md_table(("run", "status", "reason"), ([s["run"], s["status"], s["reason"]] for s in statuses))
        lines += [""]
    return "\n".join(lines)
