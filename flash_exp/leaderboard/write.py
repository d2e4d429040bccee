"""Collect every result of a runs directory and write ``leaderboard.md`` and ``leaderboard.html``."""

from __future__ import annotations

from pathlib import Path

from flash_exp.leaderboard.anchors import PUBLISHED_FILE, load_anchors
from flash_exp.leaderboard.html_page import render_html
from flash_exp.leaderboard.markdown_page import render_markdown
from flash_exp.leaderboard.tables import build_tables
from flash_exp.metrics.results import iter_results, iter_statuses

MARKDOWN_FILE = "leaderboard.md"
HTML_FILE = "leaderboard.html"


def write_leaderboard(runs_dir: Path, out_dir: Path, published: Path = PUBLISHED_FILE) -> tuple[Path, Path]:
    """Collect every result under ``runs_dir``; write the Markdown and HTML leaderboards into ``out_dir``."""
    tables = build_tables(iter_results(runs_dir), runs_dir)
    anchors = load_anchors(published)
    statuses = [s for s in iter_statuses(runs_dir) if s["status"] != "evaluated"]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / MARKDOWN_FILE, out_dir / HTML_FILE
    paths[0].write_text(render_markdown(tables, anchors, statuses, runs_dir) + "\n")
    paths[1].write_text(render_html(tables, anchors, statuses, runs_dir) + "\n")
    return paths
