"""``leaderboard.html``: a self-contained page (it opens from wherever it is written): the Design
choices verdicts on top, then the tables with their FID-vs-NFE plots, sweep panels (error bars) and
image galleries inlined as base64 PNGs."""

from __future__ import annotations

import base64
import html
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
    table_columns,
)
from flash_exp.leaderboard.gallery import gallery_html
from flash_exp.leaderboard.plots import fid_vs_nfe_plot, sweep_panels
from flash_exp.leaderboard.tables import Table, sweep_title
from flash_exp.leaderboard.verdicts import (
    DESIGN_COLUMNS,
    PAIRED_COLUMNS,
    design_cells,
    design_choices,
    paired_cells,
    sweep_comparisons,
)


def html_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:nth-child(2){text-align:left}"
         "th{background:#f3f3f3}.anchors td{color:#555;font-style:italic}.protocol{font-size:.85em;color:#444}"
         "img{max-width:100%}summary{cursor:pointer;margin:.5em 0;color:#036}"
         ".verdicts td{text-align:left}.gallery th{font-size:.75em;font-weight:normal;text-align:left;max-width:14em}"
         ".gallery td{padding:1px}.thumb{image-rendering:pixelated;display:block;margin:auto}")


FOLD_ROWS = 30  # an HTML results table longer than this starts folded


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _section_table(header: Sequence[str], rows: Iterable[Sequence[str]], link_single_seed: bool = False) -> str:
    out = html_table(header, rows)
    return out.replace("single-seed", f"<a href='#{INTERVALS_ANCHOR}'>single-seed</a>") if link_single_seed else out


def render_html(tables: Sequence[Table], anchors: Sequence[Anchor], statuses: Sequence[dict[str, Any]],
                runs_dir: Path) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>flash_exp leaderboard</title>"
             f"<style>{STYLE}</style></head><body><h1>flash_exp leaderboard</h1>",
             f"<p>Results under <code>{html.escape(str(runs_dir))}</code>. One table per evaluation protocol; "
             "ranks compare rows of equal eval spec only. FID: clean-fid; CLIP: mean cosine similarity; "
             "↓ lower is better, ↑ higher is better. Intervals and error bars: 95 % Student t over training "
             f"seeds (<a href='#{INTERVALS_ANCHOR}'>how</a>); a single-seed configuration's error bar is the sd "
             f"over evaluation draws.</p><p class='protocol'>{html.escape(SPEC_TEXT)}</p>"]
    choices = design_choices(tables)
    if choices:
        parts.append("<h2>Design choices</h2><p>Each experiment's values against the paper's choice of its axis, "
                     f"paired by training seed (<a href='#{INTERVALS_ANCHOR}'>intervals and verdicts</a>).</p>")
        parts.append(html_table(DESIGN_COLUMNS, (design_cells(c) for c in choices)).replace(
            "<table>", "<table class='verdicts'>"))
    measured = {t.benchmark for t in tables}
    for bench in benchmarks(tables, anchors):
        bench_anchors = [a for a in anchors if a.benchmark == bench]
        title = bench if bench in measured else f"{bench}: {PUBLISHED_ONLY}"
        parts.append(f"<h2>{html.escape(title)}</h2>")
        for table in (t for t in tables if t.benchmark == bench):
            parts.append(f"<p class='protocol'>Protocol: "
                         f"{html.escape(protocol_line(table.protocol, table.protocol_hash))}</p>")
            cells = (row_cells(r, restoration_columns(table), metric_present(table, "kid"),
                               optional=optional_columns(table)) for r in table.rows)
            rows = _section_table(table_columns(table), cells, link_single_seed=True)
            parts.append(img_tag(fid_vs_nfe_plot(table, bench_anchors), f"{bench} FID vs NFE"))
            # a long table (a 24-job grid has over 70 rows) folds below the plots instead of burying them
            parts.append(rows if len(table.rows) <= FOLD_ROWS else
                         f"<details><summary>all {len(table.rows)} results of this protocol</summary>{rows}</details>")
            for sweep in sorted({r.sweep for r in table.rows if r.sweep}):
                png = sweep_panels(table, sweep)
                if png is not None:
                    parts.append(f"<h3>{html.escape(sweep_title(table, sweep))}</h3>"
                                 f"<p class='protocol'>Sweep {html.escape(sweep_location(sweep, runs_dir))}</p>"
                                 + img_tag(png, f"sweep {sweep}"))
                paired = sweep_comparisons(table, sweep, "fid") + sweep_comparisons(table, sweep, "clip_score")
                if paired:
                    parts.append(f"<p>Paired differences to the paper's choice "
                                 f"<code>{html.escape(paired[0].key)}={html.escape(paired[0].reference)}</code> "
                                 f"(<a href='#{INTERVALS_ANCHOR}'>how</a>):</p>")
                    parts.append(html_table(PAIRED_COLUMNS, (paired_cells(c) for c in paired)))
            gallery = gallery_html(table)
            if gallery is not None:
                parts.append("<h3>Images</h3><p>The same prompts with the same noise in every run and setting: "
                             "the teacher, then each configuration (its lowest training seed) at 1, 2 and 4 NFE.</p>"
                             + gallery)
        if bench_anchors:
            parts.append("<p>Published anchors (not measured here; their protocol is not fully published):</p>")
            parts.append(html_table(ANCHOR_COLUMNS, (anchor_cells(a) for a in bench_anchors))
                         .replace("<table>", "<table class='anchors'>"))
    if statuses:
        parts.append("<h2>Runs without results</h2>")
        parts.append(html_table(STATUS_COLUMNS, (status_cells(s) for s in statuses)))
    parts.append(f"<h2 id='{INTERVALS_ANCHOR}'>Intervals</h2><p>{html.escape(INTERVALS_TEXT)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
