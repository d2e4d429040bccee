"""The image gallery of the HTML page: the same prompts with the same noise at 1, 2 and 4 NFE for
each configuration (its lowest training seed's run) beside the teacher, as inlined thumbnails.

The evaluation writes, with each result, the paths (relative to the run directory) of its first
images and their prompts (``gallery``, ``gallery_prompts``): the same prompts and noise in every run
and setting, so the thumbnails of one column differ only by the model.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

from flash_exp.leaderboard.tables import Row, Table

GALLERY_NFE = (1, 2, 4)
THUMBNAIL_PX = 96  # stored size (longer side); a smaller image is kept as it is
SHOWN_PX = 72  # displayed size


def thumbnail_uri(path: Path, size: int = THUMBNAIL_PX) -> str | None:
    """A PNG data URI of the image at ``path``, its longer side at most ``size`` px; None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _cells(paths: Sequence[Path], count: int) -> str:
    out = []
    for i in range(count):
        uri = thumbnail_uri(paths[i]) if i < len(paths) else None
        out.append(f"<td><img class='thumb' width='{SHOWN_PX}' height='{SHOWN_PX}' alt='image {i}' src='{uri}'></td>"
                   if uri else "<td>-</td>")
    return "".join(out)


def gallery_html(table: Table) -> str | None:
    """One HTML table per benchmark protocol: a column per prompt, the teacher at its largest NFE first,
    then per student configuration one row per NFE of :data:`GALLERY_NFE`. None without galleries."""
    rows = [r for r in table.rows if r.gallery]
    if not rows:
        return None
    prompts = next(r.gallery_prompts for r in rows if r.gallery_prompts) if any(r.gallery_prompts for r in rows) else []
    count = max(len(r.gallery) for r in rows)
    head = "<th>model</th>" + "".join(f"<th class='prompt'>{html.escape(prompts[i]) if i < len(prompts) else i}</th>"
                                      for i in range(count))
    body = []
    teachers = [r for r in rows if r.sampler == "teacher"]
    if teachers:
        teacher = max(teachers, key=lambda r: r.nfe)
        body.append(f"<tr><th>{html.escape(teacher.label)}, {teacher.nfe} NFE, CFG {teacher.guidance:g}</th>"
                    f"{_cells(teacher.gallery, count)}</tr>")
    configurations: dict[str, dict[int, Row]] = {}
    for row in sorted((r for r in rows if r.sampler == "student"), key=lambda r: (r.legend, r.nfe)):
        configurations.setdefault(row.config_key + row.legend, {})[row.nfe] = row
    for by_nfe in configurations.values():
        for nfe in (n for n in GALLERY_NFE if n in by_nfe):
            row = by_nfe[nfe]
            seed = f", seed {row.seeds[0]}" if row.seeds else ""
            body.append(f"<tr><th>{html.escape(row.legend)}{seed}, {nfe} NFE</th>{_cells(row.gallery, count)}</tr>")
    return f"<table class='gallery'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
