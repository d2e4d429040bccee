"""``python -m flash_exp.leaderboard``: every evaluation result -> ``eval/leaderboard.md`` and ``.html``.

    python -m flash_exp.leaderboard [--runs-dir runs] [--out-dir eval]

One table per benchmark *protocol* (equal ``protocol_hash``: same prompts, image count, resolution,
resize, feature extractor, reference set, CLIP model, seed); results of another protocol get their
own table. Inside a table each row is one (model, sampler, NFE, guidance) result, and its rank is
among the rows of equal ``spec_hash`` only. Teacher baselines shared by several runs appear once.
The published Flash Diffusion numbers (``eval/published.yaml``) are shown in their own "published
anchors" table and as labelled stars on the plots, never as measured rows. The HTML page is
self-contained: FID-vs-NFE curves per table and, for the jobs of one sweep, one panel per swept
override (like the paper's Figure 5), inlined as base64 PNGs.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flash_exp.metrics.methods_panel import methods_panel
from flash_exp.metrics.results import iter_results, iter_statuses
from flash_exp.training.rundir import CONFIG_FILE, run_overrides

REPO = Path(__file__).resolve().parents[1]
PUBLISHED_FILE = REPO / "eval" / "published.yaml"
MARKDOWN_FILE = "leaderboard.md"
HTML_FILE = "leaderboard.html"


@dataclass
class Row:
    """One measured result. ``fid``: FID; ``clip``: mean cosine CLIP score; ``rank``: 1-based among
    comparable rows, those of equal ``spec_hash`` (benchmark protocol, sampler, NFE, guidance) and equal
    ``steps`` (``of`` rows in that group)."""

    label: str
    sampler: str
    nfe: int
    guidance: float
    fid: float
    clip: float
    num_images: int
    spec_hash: str
    run: str
    sweep: str | None
    overrides: dict[str, str]
    restoration: dict[str, float | None] = field(default_factory=dict)  # conditional tasks' scores
    steps: int | None = None  # data batches the student trained (None: a teacher, or no config)
    legend: str = ""  # the short name in plot legends (default: the label)
    rank: int = 1
    of: int = 1


@dataclass
class Table:
    """All results of one benchmark protocol."""

    benchmark: str
    protocol_hash: str
    protocol: dict[str, Any]
    rows: list[Row] = field(default_factory=list)


@dataclass(frozen=True)
class Anchor:
    """A published number: not measured here, protocol unknown."""

    benchmark: str
    model: str
    nfe: int
    fid: float | None
    clip: float | None
    source: str


def load_anchors(path: Path = PUBLISHED_FILE) -> list[Anchor]:
    entries = OmegaConf.to_container(OmegaConf.load(path)) if Path(path).is_file() else []
    return [Anchor(e["benchmark"], e["model"], int(e["nfe"]), e.get("fid"), e.get("clip_score"), e["source"])
            for e in entries or []]


def _label(result: dict[str, Any], runs_dir: Path) -> str:
    if result["sampler"] == "teacher":
        name = Path(str(result["model"]["pretrained"])).name
        return name if "teacher" in name.lower() else f"teacher {name}"
    run = Path(result["run"])
    try:
        return str(run.resolve().relative_to(runs_dir.resolve()))
    except ValueError:
        return str(run)


def trained_steps(run: Path) -> int | None:
    """The data batches a run trained: ``trainer.max_steps``, else the sum of ``phases.iterations``."""
    path = Path(run) / CONFIG_FILE
    if not path.is_file():
        return None
    cfg = OmegaConf.load(path)
    steps = OmegaConf.select(cfg, "trainer.max_steps", default=None)
    iterations = OmegaConf.select(cfg, "phases.iterations", default=None)
    if steps is None and iterations is not None:
        steps = sum(int(n) for n in iterations)
    return None if steps is None else int(steps)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _sorted_values(values: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    try:
        return sorted(unique, key=float)
    except ValueError:
        return unique


def job_order(row: Row) -> tuple[int, str]:
    """Sweep jobs in launch order (``<sweep>/<job number>``), which is the order of the swept values."""
    name = Path(row.run).name
    return (int(name), "") if name.isdigit() else (1 << 30, name)


def swept_axes(rows: Sequence[Row]) -> dict[str, list[str]]:
    """Override keys whose value differs between the jobs of ``rows`` -> their values: numbers sorted,
    anything else in the order the sweep launched them."""
    ordered = sorted(rows, key=job_order)
    keys = sorted({k for row in ordered for k in row.overrides})
    values = {k: [row.overrides.get(k, "(default)") for row in ordered] for k in keys}
    return {k: _sorted_values(v) for k, v in values.items() if len(set(v)) > 1}


def _label_sweep_jobs(rows: Sequence[Row]) -> None:
    """Append the swept override values to the label of each sweep job: ``<job dir> (key=value, ...)``."""
    by_sweep: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.sweep:
            by_sweep[row.sweep].append(row)
    for sweep, jobs in by_sweep.items():
        keys = list(swept_axes(jobs))
        for row in jobs:
            values = ", ".join(f"{k}={row.overrides.get(k, '(default)')}" for k in keys)
            if keys:
                row.label += f" ({values})"
            row.legend = f"{experiment_name(jobs, sweep)}: {values or Path(row.run).name}"


def experiment_name(rows: Sequence[Row], sweep: str) -> str:
    """The experiment a sweep ran (its ``experiment=`` override), else the sweep directory's name."""
    names = {r.overrides.get("experiment") for r in rows} - {None}
    return names.pop() if len(names) == 1 else f"sweep {Path(sweep).name}"


def build_tables(results: Iterable[dict[str, Any]], runs_dir: Path) -> list[Table]:
    """Group results into one table per (benchmark, protocol_hash); rank within equal spec hashes."""
    tables: dict[tuple[str, str], Table] = {}
    seen_teachers: set[tuple[str, str]] = set()
    for r in results:
        if r["sampler"] == "teacher":
            key = (repr(sorted(r["model"].items())), r["spec_hash"])
            if key in seen_teachers:
                continue
            seen_teachers.add(key)
        table = tables.setdefault((r["benchmark"], r["protocol_hash"]),
                                  Table(r["benchmark"], r["protocol_hash"], r["spec"]["protocol"]))
        overrides = run_overrides(Path(r["run"])) if r["sampler"] == "student" else {}
        student = r["sampler"] == "student"
        table.rows.append(Row(_label(r, runs_dir), r["sampler"], int(r["nfe"]), float(r["guidance"]),
                              float(r["fid"]), float(r["clip_score"]), int(r["num_images"]), r["spec_hash"],
                              r["run"], r.get("sweep") if student else None, overrides,
                              dict(r.get("restoration") or {}), trained_steps(Path(r["run"])) if student else None))
    for table in tables.values():
        _label_sweep_jobs(table.rows)
        groups: dict[tuple[str, int | None], list[Row]] = defaultdict(list)
        for row in table.rows:  # a 60-step run is not ranked against a 600-step one
            groups[(row.spec_hash, row.steps)].append(row)
        for rows in groups.values():
            for rank, row in enumerate(sorted(rows, key=lambda x: x.fid), start=1):
                row.rank, row.of = rank, len(rows)
        table.rows.sort(key=lambda x: (x.sampler != "student", x.nfe, x.guidance, x.fid))
    return sorted(tables.values(), key=lambda t: (t.benchmark, -len(t.rows), t.protocol_hash))


# ---------------------------------------------------------------------------------------------- plots
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
        ax_fid.plot([r.nfe for r in rows], [r.fid for r in rows], **style)
        ax_clip.plot([r.nfe for r in rows], [r.clip for r in rows], **style)
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
    fig.suptitle(f"{table.benchmark}: FID and CLIP vs NFE", fontsize=11)
    _legend_outside(ax_clip, count)
    return _png(fig)


def _axis_plot(ax: Any, rows: Sequence[Row], key: str, values: list[str], metric: str) -> None:
    """``metric`` of ``rows`` against the swept ``key``: grouped bars (one per NFE) for categorical
    values, lines for numeric ones; with several jobs per value (other axes vary), their mean."""
    nfes = sorted({r.nfe for r in rows})
    numeric = all(_is_number(v) for v in values)
    width = 0.8 / len(nfes)
    for i, nfe in enumerate(nfes):
        means = []
        for value in values:
            scores = [getattr(r, metric) for r in rows if r.nfe == nfe and r.overrides.get(key, "(default)") == value]
            means.append(sum(scores) / len(scores) if scores else float("nan"))
        if numeric:
            ax.plot([float(v) for v in values], means, "o-", label=f"{nfe} NFE")
        else:
            ax.bar([x + (i - (len(nfes) - 1) / 2) * width for x in range(len(values))], means, width,
                   label=f"{nfe} NFE")
    if numeric:
        ax.set_xticks([float(v) for v in values], values, fontsize=8)
    else:
        ax.set_xticks(range(len(values)), values, rotation=30, ha="right", fontsize=8)
    ax.set_xlabel(key)
    ax.set_ylabel("FID (lower is better)" if metric == "fid" else "CLIP score (higher is better)")
    ax.grid(alpha=0.3, axis="y")
    if metric == "clip":  # CLIP scores differ in the second decimal: the axis starts near the lowest
        scores = [r.clip for r in rows]
        low, high = min(scores), max(scores)
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
    fig.suptitle(sweep_title(table, sweep), fontsize=11)
    fig.tight_layout()
    return _png(fig)


def sweep_title(table: Table, sweep: str) -> str:
    """``<experiment>: <swept axes> (<benchmark>)``."""
    rows = [r for r in table.rows if r.sweep == sweep]
    return f"{experiment_name(rows, sweep)}: {', '.join(swept_axes(rows)) or 'no swept axis'} ({table.benchmark})"


# ---------------------------------------------------------------------------------------------- text
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


def _sweep_title(sweep: str, runs_dir: Path) -> str:
    try:
        return str(Path(sweep).resolve().relative_to(runs_dir.resolve()))
    except ValueError:
        return sweep


def _protocol_line(p: dict[str, Any], protocol_hash: str) -> str:
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


def _cells(row: Row, restoration: Sequence[str] = ()) -> list[str]:
    scores = ["-" if row.restoration.get(n) is None else f"{row.restoration[n]:.4f}" for n in restoration]
    rank = f"{row.rank}/{row.of}" if row.of > 1 else "-"  # nothing comparable to rank against
    return [rank, row.label, row.sampler, "-" if row.steps is None else str(row.steps), str(row.nfe),
            f"{row.guidance:g}", f"{row.fid:.3f}", f"{row.clip:.4f}", *scores, str(row.num_images),
            row.spec_hash[:12]]


def _anchor_cells(a: Anchor) -> list[str]:
    return [a.model, str(a.nfe), "-" if a.fid is None else f"{a.fid:g}", "-" if a.clip is None else f"{a.clip:g}",
            a.source]


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _benchmarks(tables: Sequence[Table], anchors: Sequence[Anchor]) -> list[str]:
    """Benchmarks with measured results first, then those with published anchors only."""
    measured = sorted({t.benchmark for t in tables})
    return measured + sorted({a.benchmark for a in anchors} - set(measured))


def render_markdown(tables: Sequence[Table], anchors: Sequence[Anchor], statuses: Sequence[dict[str, Any]],
                    runs_dir: Path) -> str:
    lines = ["# flash_exp leaderboard", "",
             f"Results under `{runs_dir}`. One table per evaluation protocol; ranks compare rows of equal "
             "eval spec only. FID: clean-fid; CLIP: mean cosine similarity. Plots: `leaderboard.html`.", ""]
    for bench in _benchmarks(tables, anchors):
        lines += [f"## {bench}", ""]
        for table in (t for t in tables if t.benchmark == bench):
            lines += [f"Protocol: {_protocol_line(table.protocol, table.protocol_hash)}", ""]
            extra = restoration_columns(table)
            lines += _md_table(table_columns(table), (_cells(r, extra) for r in table.rows)) + [""]
            for sweep in sorted({r.sweep for r in table.rows if r.sweep}):
                header, body = sweep_summary(table, sweep)
                lines += [f"### {sweep_title(table, sweep)}", "", f"Sweep `{_sweep_title(sweep, runs_dir)}`", ""]
                lines += _md_table(header, body) + [""]
            panel = methods_panel(table.rows)
            if panel is not None:
                lines += ["### Methods", ""] + _md_table(*panel) + [""]
        bench_anchors = [a for a in anchors if a.benchmark == bench]
        if bench_anchors:
            lines += ["Published anchors (not measured here; their protocol is not fully published):", ""]
            lines += _md_table(ANCHOR_COLUMNS, (_anchor_cells(a) for a in bench_anchors)) + [""]
    if statuses:
        lines += ["## Runs without results", ""]
        lines += _md_table(("run", "status", "reason"), ([s["run"], s["status"], s["reason"]] for s in statuses))
        lines += [""]
    return "\n".join(lines)


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:nth-child(2){text-align:left}"
         "th{background:#f3f3f3}.anchors td{color:#555;font-style:italic}.protocol{font-size:.85em;color:#444}"
         "img{max-width:100%}summary{cursor:pointer;margin:.5em 0;color:#036}")


FOLD_ROWS = 30  # an HTML results table longer than this starts folded


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(tables: Sequence[Table], anchors: Sequence[Anchor], statuses: Sequence[dict[str, Any]],
                runs_dir: Path) -> str:
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>flash_exp leaderboard</title>"
             f"<style>{STYLE}</style></head><body><h1>flash_exp leaderboard</h1>",
             f"<p>Results under <code>{html.escape(str(runs_dir))}</code>. One table per evaluation protocol; "
             "ranks compare rows of equal eval spec only. FID: clean-fid; CLIP: mean cosine similarity.</p>"]
    for bench in _benchmarks(tables, anchors):
        bench_anchors = [a for a in anchors if a.benchmark == bench]
        parts.append(f"<h2>{html.escape(bench)}</h2>")
        for table in (t for t in tables if t.benchmark == bench):
            parts.append(f"<p class='protocol'>Protocol: "
                         f"{html.escape(_protocol_line(table.protocol, table.protocol_hash))}</p>")
            extra = restoration_columns(table)
            rows = _html_table(table_columns(table), (_cells(r, extra) for r in table.rows))
            parts.append(_img(fid_vs_nfe_plot(table, bench_anchors), f"{bench} FID vs NFE"))
            # a long table (a 24-job grid has over 70 rows) folds below the plots instead of burying them
            parts.append(rows if len(table.rows) <= FOLD_ROWS else
                         f"<details><summary>all {len(table.rows)} results of this protocol</summary>{rows}</details>")
            for sweep in sorted({r.sweep for r in table.rows if r.sweep}):
                png = sweep_panels(table, sweep)
                if png is not None:
                    parts.append(f"<h3>{html.escape(sweep_title(table, sweep))}</h3>"
                                 f"<p class='protocol'>Sweep {html.escape(_sweep_title(sweep, runs_dir))}</p>"
                                 + _img(png, f"sweep {sweep}"))
        if bench_anchors:
            parts.append("<p>Published anchors (not measured here; their protocol is not fully published):</p>")
            parts.append(_html_table(ANCHOR_COLUMNS, (_anchor_cells(a) for a in bench_anchors))
                         .replace("<table>", "<table class='anchors'>"))
    if statuses:
        parts.append("<h2>Runs without results</h2>")
        parts.append(_html_table(("run", "status", "reason"), ([s["run"], s["status"], s["reason"]] for s in statuses)))
    parts.append("</body></html>")
    return "\n".join(parts)


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("FLASH_EXP_RUNS", "runs")),
                        help="where the runs are (default: $FLASH_EXP_RUNS or runs)")
    parser.add_argument("--out-dir", type=Path, default=Path("eval"), help="where to write the leaderboard")
    args = parser.parse_args(argv)
    for path in write_leaderboard(args.runs_dir, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
