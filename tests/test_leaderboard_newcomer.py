"""The leaderboard a newcomer reads: ranks across train steps, "train steps", the spec hash explained,
legends that name the model, published-only sections labelled, unevaluated runs listed with their
command, single-draw numbers linked to the intervals explanation."""

from __future__ import annotations

import html

from flash_exp.leaderboard import build_tables, write_leaderboard
from flash_exp.metrics.results import iter_results
from tests.fixtures_results import run_config, write_result, write_run


def _two_runs_of_different_steps(runs):
    write_result(write_run(runs / "short", run_config(0, {}, steps=3), []), "student", 4, 5.60)
    write_result(write_run(runs / "long", run_config(0, {}, steps=150), []), "student", 4, 6.27)


def test_rows_of_different_train_steps_get_a_rank(tmp_path):
    _two_runs_of_different_steps(tmp_path / "runs")
    (table,) = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    assert sorted((r.label, r.steps, r.rank, r.of) for r in table.rows) == [("long", 150, 2, 2), ("short", 3, 1, 2)]


def test_training_steps_are_called_train_steps(tmp_path):
    _two_runs_of_different_steps(tmp_path / "runs")
    md, page = (p.read_text() for p in write_leaderboard(tmp_path / "runs", tmp_path / "board"))
    assert "| rank | model | sampler | train steps | NFE |" in md and "<th>train steps</th>" in page
    assert "| steps |" not in md


def test_the_spec_hash_is_explained(tmp_path):
    _two_runs_of_different_steps(tmp_path / "runs")
    md, page = (p.read_text() for p in write_leaderboard(tmp_path / "runs", tmp_path / "board"))
    for text in (md, html.unescape(page)):
        assert "spec: the first 12 hex digits of the eval spec's sha256, which covers the benchmark protocol" in text


def test_legends_name_method_backbone_and_swept_value(tmp_path):
    sweep = tmp_path / "runs" / "sweeps" / "fig5g_gan_loss" / "toy-t2i" / "t0"
    for job, gan in enumerate(("lsgan", "hinge")):
        run = write_run(sweep / str(job), run_config(0, {"loss": {"adversarial": {"type": gan}}}),
                        ["experiment=fig5g_gan_loss", f"loss.adversarial.type={gan}"])
        write_result(run, "student", 4, 5.0 + job, sweep=sweep)
    write_result(write_run(tmp_path / "runs" / "alone", run_config(0, {}, method={"name": "lcm"}), []),
                 "student", 4, 7.0)
    (table,) = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    assert sorted(r.legend for r in table.rows) == [
        "flash toy · fig5g_gan_loss: loss.adversarial.type=hinge",
        "flash toy · fig5g_gan_loss: loss.adversarial.type=lsgan", "lcm toy: alone"]


def test_benchmarks_with_only_published_anchors_are_labelled_as_published_figures(tmp_path):
    _two_runs_of_different_steps(tmp_path / "runs")
    md, page = (p.read_text() for p in write_leaderboard(tmp_path / "runs", tmp_path / "board"))
    assert "## coco2014_30k: published figures only (no run here was scored on it)" in md
    assert "<h2>coco2014_30k: published figures only (no run here was scored on it)</h2>" in page
    assert "## toy\n" in md  # a measured benchmark keeps its plain title


def test_finished_but_unevaluated_runs_are_listed_with_the_command_that_evaluates_them(tmp_path):
    runs = tmp_path / "runs"
    _two_runs_of_different_steps(runs)
    done = write_run(runs / "trained", run_config(0, {}), [])
    (done / "export").mkdir()
    (done / "export" / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    write_run(runs / "unfinished", run_config(0, {}), [])  # no student yet: not listed as evaluable
    md = write_leaderboard(runs, tmp_path / "board")[0].read_text()
    section = md.split("## Runs without results")[1]
    assert f"| {done} | not evaluated | trained; no evaluation result | python -m flash_exp.evaluate run_dir={done} |" \
        in section
    assert "evaluate run_dir=" + str(runs / "unfinished") not in section


def test_single_draw_numbers_link_the_intervals_explanation(tmp_path):
    _two_runs_of_different_steps(tmp_path / "runs")
    md, page = (p.read_text() for p in write_leaderboard(tmp_path / "runs", tmp_path / "board"))
    assert "| 5.600 | one draw, [single-seed](#intervals) |" in md and "\n## Intervals\n" in md
    assert "<a href='#intervals'>single-seed</a>" in page and "<h2 id='intervals'>Intervals</h2>" in page
    assert "Student t interval over training seeds" in md.split("## Intervals")[1]
