"""The leaderboard: every evaluation result -> ``eval/leaderboard.md`` and ``.html``
(``python -m flash_exp.leaderboard``).

Modules, one job each:

* :mod:`~flash_exp.leaderboard.tables`         results -> one table per protocol, seeds grouped, ranks, sweep labels
* :mod:`~flash_exp.leaderboard.verdicts`       paired comparisons with each experiment's reference, Design choices
* :mod:`~flash_exp.leaderboard.anchors`        the published numbers (``eval/published.yaml``)
* :mod:`~flash_exp.leaderboard.methods_panel`  Flash, LCM and DMD2 students of one protocol side by side
* :mod:`~flash_exp.leaderboard.cells`          columns, cells, protocol line and sweep summary of both pages
* :mod:`~flash_exp.leaderboard.plots`          FID / CLIP against NFE and the sweep panels with error bars, as PNG bytes
* :mod:`~flash_exp.leaderboard.markdown_page`  ``leaderboard.md``
* :mod:`~flash_exp.leaderboard.gallery`        the evaluation's first images per configuration, as thumbnails
* :mod:`~flash_exp.leaderboard.html_page`      ``leaderboard.html``, plots and thumbnails inlined
* :mod:`~flash_exp.leaderboard.write`          collect a runs directory, write both pages

Public API: :func:`write_leaderboard`, :func:`build_tables`, :func:`load_anchors`,
:func:`render_markdown`, :func:`render_html`.
"""

from flash_exp.leaderboard.anchors import load_anchors
from flash_exp.leaderboard.html_page import render_html
from flash_exp.leaderboard.markdown_page import render_markdown
from flash_exp.leaderboard.tables import build_tables
from flash_exp.leaderboard.write import write_leaderboard

__all__ = ["build_tables", "load_anchors", "render_html", "render_markdown", "write_leaderboard"]
