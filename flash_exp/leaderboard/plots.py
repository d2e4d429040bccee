"""The leaderboard's plots as PNG bytes: FID and CLIP against NFE per table (published anchors as
stars), and per sweep one panel per swept override (like the paper's Figure 5)."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from flash_exp.leaderboard.anchors import Anchor
from flash_exp.leaderboard.tables import Row, Table, sweep_title, swept_axes


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_outside(ax: Any, count: int) -> None:
    """The legend to the right of the axes, in as many columns as it needs to stay within the figure."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              ncol=max(1, -(-count // 28)), frameon=False)


ERROR_BARS = "error bars: 95 % Student t interval over training seeds; single-seed: ±1 sd over evaluation draws"


def error(row: Row, metric: str) -> float:
    """The error bar's half-length of ``row``'s ``metric`` ("fid" or "clip_score"): the half-width of the
    t interval over seeds, else the sd over evaluation draws, else 0."""
    interval = row.intervals.get(metric)
    if interval is not None and interval.half_width is not None:
        return interval.half_width
    return row.draw_sd.get(metric) or 0.0


def _errors(rows: Sequence[Row], metric: str, log: bool) -> list[list[float]]:
    """[lower, upper] error lengths; on a log axis the lower one stops short of zero."""
    values = [r.fid if metric == "fid" else r.clip for r in rows]
    half = [error(r, metric) for r in rows]
    lower = [min(h, 0.95 * v) if log else h for h, v in zip(half, values, strict=True)]
    return [lower, half]


def fid_vs_nfe_plot(table: Table, anchors: Sequence[Anchor]) -> bytes:
    """FID and CLIP against NFE, side by side: one line per run (student), one per teacher (dashed),
    published anchors as stars; the legend outside the plots."""
    plt = _pyplot()
    from matplotlib.ticker import LogFormatter

    lines: dict[tuple[str, float], list[Row]] = defaultdict(list)
    for row in table.rows:
        lines[(row.legend or row.label, row.guidance)].append(row)
    published = [a for a in anchors if a.fid is not None]
    count = len(lines) + len({a.model for a in published})
    fig, (ax_fid, ax_clip) = plt.subplots(1, 2, figsize=(12, max(4.2, 0.16 * count)))
    # one colour per experiment (the legend's text before ":"), one marker per job inside it
    colours, markers = plt.get_cmap("tab10").colors, "ov^sD<>pPX*h"
    groups = list(dict.fromkeys(label.split(":")[0] for label, _ in sorted(lines)))
    within: dict[str, int] = defaultdict(int)
    for (label, guidance), rows in sorted(lines.items()):
        rows = sorted(rows, key=lambda x: x.nfe)
        teacher = rows[0].sampler == "teacher"
        group = label.split(":")[0]
        style = dict(color="black" if teacher else colours[groups.index(group) % len(colours)], alpha=0.85,
                     linestyle="--" if teacher else "-", marker="s" if teacher else markers[within[group] % len(markers)],
                     markersize=4, label=f"{label} (CFG {guidance:g})" if teacher else label)
        within[group] += 1
        ax_fid.errorbar([r.nfe for r in rows], [r.fid for r in rows], yerr=_errors(rows, "fid", log=True),
                        capsize=3, **style)
        ax_clip.errorbar([r.nfe for r in rows], [r.clip for r in rows], yerr=_errors(rows, "clip_score", log=False),
                         capsize=3, **style)
    for model in dict.fromkeys(a.model for a in published):
        points = [(a.nfe, a.fid) for a in published if a.model == model]
        ax_fid.plot([x for x, _ in points], [y for _, y in points], "*", color="black", markersize=12,
                    label=f"published: {model}")
    nfes = sorted({r.nfe for r in table.rows} | {a.nfe for a in published})
    for ax, metric in ((ax_fid, "FID (lower is better)"), (ax_clip, "CLIP score (higher is better)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.set_xlabel("NFE (sampler steps)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    ax_fid.set_yscale("log")
    ax_fid.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    ax_fid.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    fig.suptitle(f"{table.benchmark}: FID and CLIP vs NFE ({ERROR_BARS})", fontsize=10)
    _legend_outside(ax_clip, count)
    return _png(fig)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _axis_plot(ax: Any, rows: Sequence[Row], key: str, values: list[str], metric: str) -> None:
    """``metric`` of ``rows`` against the swept ``key``: grouped bars (one per NFE) for categorical
    values, lines for numeric ones, with error bars (:func:`error`); with several configurations per
    value (other axes vary), their mean and no error bar."""
    nfes = sorted({r.nfe for r in rows})
    numeric = all(_is_number(v) for v in values)
    width = 0.8 / len(nfes)
    result_key = "fid" if metric == "fid" else "clip_score"
    for i, nfe in enumerate(nfes):
        means, errors = [], []
        for value in values:
            matching = [r for r in rows if r.nfe == nfe and r.overrides.get(key, "(default)") == value]
            scores = [getattr(r, metric) for r in matching]
            means.append(sum(scores) / len(scores) if scores else float("nan"))
            errors.append(error(matching[0], result_key) if len(matching) == 1 else 0.0)
        if numeric:
            ax.errorbar([float(v) for v in values], means, yerr=errors, fmt="o-", capsize=3, label=f"{nfe} NFE")
        else:
            ax.bar([x + (i - (len(nfes) - 1) / 2) * width for x in range(len(values))], means, width,
                   yerr=errors, capsize=3, label=f"{nfe} NFE")
    if numeric:
        ax.set_xticks([float(v) for v in values], values, fontsize=8)
    else:
        ax.set_xticks(range(len(values)), values, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel("FID (lower is better)" if metric == "fid" else "CLIP score (higher is better)")
    ax.grid(alpha=0.3, axis="y")
    if metric == "clip":  # CLIP scores differ in the second decimal: the axis starts near the lowest
        low = min(r.clip - error(r, "clip_score") for r in rows)
        high = max(r.clip + error(r, "clip_score") for r in rows)
        ax.set_ylim(low - 0.25 * (high - low or 0.05), high + 0.1 * (high - low or 0.05))


def sweep_panels(table: Table, sweep: str) -> bytes | None:
    """Per swept axis of ``sweep``, FID and CLIP of its jobs against the axis values, one colour per NFE
    (None when nothing varies). Titled by the experiment and the axis."""
    plt = _pyplot()
    rows = [r for r in table.rows if r.sweep == sweep]
    axes_values = swept_axes(rows)
    if not axes_values:
        return None
    fig, axes = plt.subplots(len(axes_values), 2, figsize=(11, 3.8 * len(axes_values)), squeeze=False)
    for (ax_fid, ax_clip), (key, values) in zip(axes, axes_values.items(), strict=True):
        _axis_plot(ax_fid, rows, key, values, "fid")
        _axis_plot(ax_clip, rows, key, values, "clip")
        ax_fid.set_title(f"{key}: FID", fontsize=9)
        ax_clip.set_title(f"{key}: CLIP", fontsize=9)
        _legend_outside(ax_clip, len({r.nfe for r in rows}))
    fig.suptitle(f"{sweep_title(table, sweep)}\n{ERROR_BARS}", fontsize=10)
    fig.tight_layout()
    return _png(fig)
