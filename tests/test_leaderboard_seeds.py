"""The leaderboard over training seeds: grouping, intervals, paired verdicts, the Design choices
table, galleries, error bars, and the page a newcomer reads."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from flash_exp.leaderboard import build_tables, write_leaderboard
from flash_exp.leaderboard.plots import error, fid_vs_nfe_plot, sweep_panels
from flash_exp.leaderboard.verdicts import design_choices, sweep_comparisons
from flash_exp.metrics.results import iter_results
from tests.fixtures_results import run_config, write_result, write_run, write_sweep


def _timesteps(value):
    return {"timesteps": {"distribution": value}}


def _gan(value):
    return {"loss": {"adversarial": {"type": value}}}


def test_runs_that_differ_only_in_the_seed_are_one_row_with_a_t_interval(tmp_path):
    runs = tmp_path / "runs"
    fids = [4.46, 5.20, 4.97]
    for seed, fid in enumerate(fids):
        write_result(write_run(runs / f"s{seed}", run_config(seed, {}), [f"seed={seed}"]), "student", 4, fid)
    # one key other than the seed differs (deep in the config): never merged, whatever its seed
    write_result(write_run(runs / "lr", run_config(0, {}, trainer={"optim": {"lr": 0.002}}), []), "student", 4, 4.5)
    write_result(write_run(runs / "steps", run_config(1, {}, steps=61), []), "student", 4, 4.6)
    (table,) = build_tables(iter_results(runs), runs)
    by_label = {r.label: r for r in table.rows}
    assert sorted(by_label) == ["lr", "s0", "steps"]
    grouped = by_label["s0"]
    low, high = scipy.stats.t.interval(0.95, 2, loc=np.mean(fids), scale=scipy.stats.sem(fids))
    assert grouped.seeds == [0, 1, 2] and grouped.fid == pytest.approx(np.mean(fids))
    assert (grouped.intervals["fid"].low, grouped.intervals["fid"].high) == (pytest.approx(low), pytest.approx(high))
    assert by_label["lr"].seeds == [0] and by_label["lr"].single_seed
    assert by_label["steps"].seeds == [1]


def test_a_single_seed_row_shows_its_evaluation_draw_spread_and_old_results_still_render(tmp_path):
    runs = tmp_path / "runs"
    write_result(write_run(runs / "new", run_config(0, {}), []), "student", 4, 3.58, fid_std=0.22,
                 clip_score_std=0.004, kid=0.0012, kid_std=0.0003, precision=0.7, recall=0.41, density=0.9,
                 coverage=0.8, draws=[{"fid": 3.4}, {"fid": 3.7}, {"fid": 3.64}])
    write_result(write_run(runs / "old", run_config(0, {}, steps=70), []), "student", 4, 3.9)
    md = write_leaderboard(runs, tmp_path / "board")[0].read_text()
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "| FID ↓ | FID 95 % interval | CLIP ↑ | recall ↑ | KID ↓ |" in header
    assert "| 3.580 | ±0.220 sd over 3 draws, [single-seed](#intervals) | 0.3000 | 0.410 | 0.0012 |" in md
    assert "| 3.900 | one draw, [single-seed](#intervals) | 0.3000 | - | - |" in md


def _fig5e(tmp_path, clip=0.3):
    sweep = tmp_path / "runs" / "sweeps" / "fig5e_timesteps" / "toy-t2i" / "t0"
    fids = {"mixture": {4: [5.0, 6.0, 4.0], 1: [9.0, 9.5, 8.5]},
            "uniform": {4: [7.0, 8.2, 5.8], 1: [9.1, 9.3, 8.9]},    # worse at 4, unresolved at 1
            "gaussian": {4: [4.0, 4.9, 3.1], 1: [10.0, 10.6, 9.4]},  # better at 4, worse at 1
            "modes": {4: [6.0, 5.0, 4.5], 1: [9.0, 10.1, 8.0]}}      # unresolved at 4 and at 1
    write_sweep(sweep, "fig5e_timesteps", "timesteps", "mixture", fids, _timesteps, clip)
    return sweep


def test_paired_verdicts_give_each_of_the_three_outcomes(tmp_path):
    sweep = _fig5e(tmp_path)
    (table,) = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    got = {(c.value, c.nfe): c.paired for c in sweep_comparisons(table, str(sweep), "fid")}
    assert {k: p.verdict for k, p in got.items() if k[1] == 4} == {
        ("uniform", 4): "worse", ("gaussian", 4): "better", ("modes", 4): "not resolved with 3 seeds"}
    assert got[("uniform", 4)].differences == pytest.approx((2.0, 2.2, 1.8))
    modes = got[("modes", 4)]
    diffs = [1.0, -1.0, 0.5]
    assert modes.differences == pytest.approx(diffs)
    t = scipy.stats.t.ppf(0.975, np.arange(2, 200) - 1) * np.std(diffs, ddof=1) / np.sqrt(np.arange(2, 200))
    assert modes.seeds_needed == int(np.arange(2, 200)[t < abs(np.mean(diffs))][0])


def test_design_choices_rows_from_a_result_tree(tmp_path):
    _fig5e(tmp_path)
    gan = tmp_path / "runs" / "sweeps" / "fig5g_gan_loss" / "toy-t2i" / "t0"
    write_sweep(gan, "fig5g_gan_loss", "loss.adversarial.type", "lsgan",
                {"lsgan": {4: [4.0, 4.2, 3.8], 1: [8.0, 8.1, 7.9]},
                 "hinge": {4: [5.0, 5.3, 4.9], 1: [9.0, 9.2, 8.9]},
                 "wgan": {4: [6.0, 6.1, 5.8], 1: [9.5, 9.6, 9.3]}}, _gan)
    tables = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    rows = {c.experiment: c for c in design_choices(tables)}
    e, g = rows["fig5e_timesteps"], rows["fig5g_gan_loss"]
    assert (e.reference, e.seeds, g.reference) == ("timesteps=mixture", 3, "loss.adversarial.type=lsgan")
    assert e.best == "gaussian (FID 4.000 at 4 NFE)" and g.best == "lsgan (FID 4.000 at 4 NFE)"
    assert e.fid_verdicts[4].startswith("contradicted: gaussian better; 1 of 3 worse")
    assert e.fid_verdicts[1].startswith("1 of 3 worse; not resolved with 3 seeds (")
    assert g.fid_verdicts == {4: "confirmed: all 2 others worse", 1: "confirmed: all 2 others worse"}
    assert g.clip_verdicts[4].startswith("not resolved with 3 seeds")  # equal CLIP everywhere
    md_path, html_path = write_leaderboard(tmp_path / "runs", tmp_path / "board")
    md, page = md_path.read_text(), html_path.read_text()
    assert md.index("## Design choices") < md.index("## toy") and page.index("Design choices") < page.index("<h2>toy")
    assert "| fig5g_gan_loss | toy | loss.adversarial.type=lsgan | lsgan (FID 4.000 at 4 NFE) | 3 | confirmed" in md
    assert "Paired differences to the paper's choice timesteps=mixture" in md
    assert "| uniform | 4 | FID ↓ | 0,1,2 | +2.000 +2.200 +1.800 | +2.000 |" in md


def test_experiment_references_reach_the_page_only_for_the_swept_key(tmp_path):
    """A sweep whose configs name no reference gets no paired table and no Design choices row."""
    sweep = tmp_path / "runs" / "sweeps" / "x" / "t0"
    for job, value in enumerate(("mixture", "uniform")):
        run = write_run(sweep / str(job), run_config(0, _timesteps(value)), [f"timesteps={value}"])
        write_result(run, "student", 4, 5.0 + job, sweep=sweep)
    tables = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    assert design_choices(tables) == [] and sweep_comparisons(tables[0], str(sweep)) == []
    assert "## Design choices" not in write_leaderboard(tmp_path / "runs", tmp_path / "board")[0].read_text()


def test_error_bars_are_the_t_half_width_over_seeds_else_the_draw_sd(tmp_path):
    sweep = _fig5e(tmp_path)
    write_result(write_run(tmp_path / "runs" / "single", run_config(0, {}, steps=99), []), "student", 4, 3.6,
                 fid_std=0.22, clip_score_std=0.01)
    (table,) = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    mixture = next(r for r in table.rows if r.overrides.get("timesteps") == "mixture" and r.nfe == 4)
    half = scipy.stats.t.ppf(0.975, 2) * np.std([5.0, 6.0, 4.0], ddof=1) / np.sqrt(3)
    assert error(mixture, "fid") == pytest.approx(half)
    single = next(r for r in table.rows if r.label == "single")
    assert (error(single, "fid"), error(single, "clip_score")) == (0.22, 0.01)
    assert fid_vs_nfe_plot(table, []).startswith(b"\x89PNG")
    assert sweep_panels(table, str(sweep)).startswith(b"\x89PNG")


def test_the_gallery_shows_the_same_prompts_at_1_2_4_nfe_beside_the_teacher(tmp_path):
    runs = tmp_path / "runs"
    prompts = [f"a red circle {i}" for i in range(8)]

    def images(run, setting, colour):
        paths = []
        for i in range(8):
            path = run / "eval" / "toy" / setting / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 32), colour).save(path)
            paths.append(str(path.relative_to(run)))
        return paths

    for seed in (0, 1):
        run = write_run(runs / f"s{seed}", run_config(seed, {}), [f"seed={seed}"])
        for nfe in (1, 2, 4):
            write_result(run, "student", nfe, 5.0 - nfe, gallery=images(run, f"student_nfe{nfe}", (nfe * 60, 0, 0)),
                         gallery_prompts=prompts)
        write_result(run, "teacher", 25, 3.0, gallery=images(run, "teacher_nfe25", (0, 0, 200)),
                     gallery_prompts=prompts)
    page = write_leaderboard(runs, tmp_path / "board")[1].read_text()
    gallery = page.split("<table class='gallery'>")[1].split("</table>")[0]
    assert all(p in gallery for p in prompts)
    assert gallery.count("<img class='thumb'") == 8 * 4  # teacher + one configuration (seed 0) at 1, 2, 4 NFE
    assert re.search(r"<th>toy-teacher, 25 NFE, CFG 5</th>", gallery)
    assert "flash toy: s0, seed 0, 1 NFE" in gallery and "seed 1" not in gallery
    assert "src='data:image/png;base64," in gallery and "eval/toy/" not in page  # opens from anywhere


def test_a_single_seed_sweep_is_not_resolved_and_asks_for_a_second_seed(tmp_path):
    sweep = tmp_path / "runs" / "sweeps" / "fig5g_gan_loss" / "toy-t2i" / "t0"
    write_sweep(sweep, "fig5g_gan_loss", "loss.adversarial.type", "lsgan",
                {"lsgan": {4: [4.0]}, "wgan": {4: [9.0]}}, _gan)
    tables = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    (choice,) = design_choices(tables)
    assert choice.seeds == 1
    assert choice.fid_verdicts[4] == "not resolved with 1 seed (wgan needs a 2nd seed)"
