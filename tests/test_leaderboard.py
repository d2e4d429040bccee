"""The leaderboard: tables per protocol, ranks per spec, published anchors apart, sweep panels."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from flash_exp.files import write_json_atomic
from flash_exp.leaderboard import build_tables, load_anchors, write_leaderboard
from flash_exp.leaderboard.cells import sweep_summary
from flash_exp.leaderboard.plots import sweep_panels
from flash_exp.leaderboard.tables import swept_axes
from flash_exp.metrics.results import (
    RESULT_KIND,
    STATUS_KIND,
    iter_results,
    result_path,
    status_path,
)
from flash_exp.metrics.spec import (
    SamplerSetting,
    eval_spec,
    protocol_hash,
    protocol_spec,
    sampler_spec,
    spec_hash,
)

FEATURES = {"name": "inception-2015-12-05", "input_size": 299, "weights_sha256": "a" * 64}
CLIP = {"model": "ViT-g-14", "pretrained": "laion2b_s12b_b42k", "weights_sha256": "b" * 64}
TEACHER = {"family": "sd", "pretrained": "stable-diffusion-v1-5/stable-diffusion-v1-5", "revision": None,
           "variant": None, "dtype": "float16"}


def write_result(run: Path, benchmark: str, sampler: str, nfe: int, fid: float, num_images: int = 5000,
                 overrides: list[str] | None = None, sweep: Path | None = None) -> dict:
    """A result file as the evaluator writes it (numbers made up, spec built by the real functions)."""
    if overrides is not None:
        (run / ".hydra").mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    setting = SamplerSetting(sampler, nfe, 0.0 if sampler == "student" else 3.0)
    protocol = protocol_spec(benchmark, "d" * 64, num_images, 256, 0, FEATURES,
                             {"count": 5000, "sha256": "c" * 64, "source": "all"}, CLIP, False)
    spec = eval_spec(protocol, sampler_spec(setting, {"name": "LCMScheduler"}, 512))
    model = {"kind": sampler, **TEACHER, **({"lora_sha256": run.name} if sampler == "student" else {})}
    result = {"kind": RESULT_KIND, "run": str(run), "sweep": str(sweep) if sweep else None, "benchmark": benchmark,
              "setting": setting.name, "sampler": sampler, "nfe": nfe, "guidance": setting.guidance, "fid": fid,
              "clip_score": 0.3, "num_images": num_images, "spec_hash": spec_hash(spec),
              "protocol_hash": protocol_hash(spec), "spec": spec, "model": model}
    write_json_atomic(result_path(run, benchmark, setting.name), result)
    return result


def test_results_with_different_specs_never_share_a_table(tmp_path):
    a = write_result(tmp_path / "a", "coco2017_5k", "student", 2, 30.0)
    b = write_result(tmp_path / "a", "coco2017_5k", "student", 4, 28.0)
    c = write_result(tmp_path / "b", "coco2017_5k", "student", 2, 25.0, num_images=1000)  # another protocol
    d = write_result(tmp_path / "c", "coco2017_5k", "student", 2, 35.0)
    tables = build_tables(iter_results(tmp_path), tmp_path)
    assert len(tables) == 2
    by_hash = {t.protocol_hash: t for t in tables}
    assert {r.spec_hash for r in by_hash[a["protocol_hash"]].rows} == {a["spec_hash"], b["spec_hash"]}
    assert [r.spec_hash for r in by_hash[c["protocol_hash"]].rows] == [c["spec_hash"]]
    rows = {(r.label, r.nfe): r for r in by_hash[a["protocol_hash"]].rows}
    assert (rows[("a", 2)].rank, rows[("a", 2)].of) == (1, 2)  # 30.0 beats 35.0 at 2 NFE
    assert (rows[("c", 2)].rank, rows[("c", 2)].of) == (2, 2)
    assert (rows[("a", 4)].rank, rows[("a", 4)].of) == (1, 1)  # 4 NFE is ranked on its own
    assert d["spec_hash"] == a["spec_hash"]


def test_teacher_rows_shared_by_runs_appear_once_and_anchors_stay_apart(tmp_path):
    runs = tmp_path / "runs"
    for name, fid in (("r1", 24.0), ("r2", 23.0)):
        write_result(runs / name, "coco2017_5k", "student", 2, fid)
        write_result(runs / name, "coco2017_5k", "teacher", 50, 21.0)
    (runs / "r3" / "eval").mkdir(parents=True)
    write_json_atomic(status_path(runs / "r3"), {"kind": STATUS_KIND, "run": str(runs / "r3"), "sweep": None,
                                                 "status": "failed", "reason": "FAILED: OOM", "benchmarks": []})
    tables = build_tables(iter_results(runs), runs)
    assert [r.sampler for r in tables[0].rows] == ["student", "student", "teacher"]
    md_path, html_path = write_leaderboard(runs, tmp_path / "board")
    md = md_path.read_text()
    section = md.split("## coco2017_5k")[1].split("\n## ")[0]
    measured, _, anchors = section.partition("Published anchors")
    assert "Flash SD" not in measured and "22.6" in anchors and "0.306" in anchors
    assert "12.27" in md.split("## coco2014_30k")[1].split("\n## ")[0]
    assert "| r1 | student | - | 2 | 0 | 24.000 |" in measured  # no config: steps unknown
    assert "FAILED: OOM" in md
    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 1 and "http" not in page.replace("https://", "")
    assert {(a.benchmark, a.nfe, a.fid) for a in load_anchors()} == {
        ("coco2017_5k", 2, 22.6), ("coco2017_5k", 4, 22.5), ("coco2014_30k", 2, 12.27), ("coco2014_30k", 4, 12.41)}


def test_a_sweep_gets_one_panel_per_swept_axis(tmp_path):
    sweep = tmp_path / "runs" / "sweeps" / "2025-01-01_00-00-00"
    grid = [("l2", "16"), ("l1", "16"), ("l2", "32"), ("l1", "32")]
    for job, (loss, k) in enumerate(grid):
        for nfe in (1, 2):
            write_result(sweep / str(job), "toy", "student", nfe, 10.0 + job + nfe,
                         overrides=[f"loss.distill.type={loss}", f"phases.k=[{k},{k},{k},{k}]", "seed=0"], sweep=sweep)
    (table,) = build_tables(iter_results(tmp_path / "runs"), tmp_path / "runs")
    assert swept_axes(table.rows) == {"loss.distill.type": ["l2", "l1"],
                                      "phases.k": ["[16,16,16,16]", "[32,32,32,32]"]}
    png = sweep_panels(table, str(sweep))
    assert png is not None and png.startswith(b"\x89PNG")
    md_path, html_path = write_leaderboard(tmp_path / "runs", tmp_path / "board")
    page = html_path.read_text()
    assert "Sweep " in page and page.count("data:image/png;base64,") == 2
    # the Markdown panel: one row per job in launch order (not by FID), FID per NFE
    header, body = sweep_summary(table, str(sweep))
    assert header == ["loss.distill.type", "phases.k", "seeds", "FID ↓ 1 NFE", "FID ↓ 2 NFE", "CLIP ↑ 1 NFE",
                      "CLIP ↑ 2 NFE"]
    assert [row[:5] for row in body] == [["l2", "[16,16,16,16]", "1", "11.000", "12.000"],
                                         ["l1", "[16,16,16,16]", "1", "12.000", "13.000"],
                                         ["l2", "[32,32,32,32]", "1", "13.000", "14.000"],
                                         ["l1", "[32,32,32,32]", "1", "14.000", "15.000"]]
    md = md_path.read_text()
    assert "### sweep 2025-01-01_00-00-00: loss.distill.type, phases.k (toy)" in md
    assert "Sweep `sweeps/2025-01-01_00-00-00`" in md


def test_rows_of_different_train_steps_are_ranked_together_and_show_their_train_steps(tmp_path):
    runs = tmp_path / "runs"
    for name, steps, fid in (("short", 60, 20.0), ("long", 600, 10.0), ("mid", 300, 12.0)):
        write_result(runs / name, "toy", "student", 2, fid, overrides=[])
        OmegaConf.save(OmegaConf.create({"trainer": {"max_steps": None}, "phases": {"iterations": [steps]}}),
                       runs / name / ".hydra" / "config.yaml")
    (table,) = build_tables(iter_results(runs), runs)
    rows = {r.label: r for r in table.rows}
    assert [(rows[n].steps, rows[n].rank, rows[n].of) for n in ("long", "mid", "short")] == [
        (600, 1, 3), (300, 2, 3), (60, 3, 3)]
    md = write_leaderboard(runs, tmp_path / "board")[0].read_text()
    assert "| rank | model | sampler | train steps | NFE |" in md
    assert "| 3/3 | short | student | 60 | 2 |" in md and "| 1/3 | long | student | 600 | 2 |" in md


def test_sweep_panels_are_titled_by_experiment_and_axis(tmp_path):
    sweep = tmp_path / "runs" / "sweeps" / "fig5g_gan_loss" / "toy-t2i" / "2025-01-01_00-00-00"
    for job, gan in enumerate(("lsgan", "hinge", "wgan")):
        write_result(sweep / str(job), "toy", "student", 1, 10.0 + job, sweep=sweep,
                     overrides=["experiment=fig5g_gan_loss", f"loss.adversarial.type={gan}"])
    md_path, html_path = write_leaderboard(tmp_path / "runs", tmp_path / "board")
    title = "fig5g_gan_loss: loss.adversarial.type (toy)"
    assert f"### {title}" in md_path.read_text() and title in html_path.read_text()
