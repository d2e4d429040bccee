"""Collect every result of a runs directory and write ``leaderboard.md`` and ``leaderboard.html``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flash_exp.leaderboard.anchors import PUBLISHED_FILE, load_anchors
from flash_exp.leaderboard.cells import NOT_EVALUATED
from flash_exp.leaderboard.html_page import render_html
from flash_exp.leaderboard.markdown_page import render_markdown
from flash_exp.leaderboard.tables import build_tables
from flash_exp.metrics.results import iter_results, iter_statuses, read_json, status_path
from flash_exp.training.rundir import READY, find_runs, run_state

MARKDOWN_FILE = "leaderboard.md"
HTML_FILE = "leaderboard.html"


def unevaluated_runs(runs_dir: Path) -> list[dict[str, Any]]:
    """Runs that finished training (an exported student) but have no result and no status file."""
    out = []
    for run in find_runs(runs_dir):
        if run_state(run).status == READY and not any(iter_results(run)) and read_json(status_path(run)) is None:
            out.append({"run": str(run), "status": NOT_EVALUATED, "reason": "trained; no evaluation result"})
    return out


def write_leaderboard(runs_dir: Path, out_dir: Path, published: Path = PUBLISHED_FILE) -> tuple[Path, Path]:
    """Collect every result under ``runs_dir``; write the Markdown and HTML leaderboards into ``out_dir``."""
    tables = build_tables(iter_results(runs_dir), runs_dir)
    anchors = load_anchors(published)
    statuses = [s for s in iter_statuses(runs_dir) if s["status"] != "evaluated"] + unevaluated_runs(runs_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / MARKDOWN_FILE, out_dir / HTML_FILE
    paths[0].write_text(render_markdown(tables, anchors, statuses, runs_dir) + "\n")
    paths[1].write_text(render_html(tables, anchors, statuses, runs_dir) + "\n")
    return paths
