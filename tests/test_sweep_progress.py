"""The sweep console: per-job status and the end-of-sweep table."""

from __future__ import annotations

import time

from omegaconf import OmegaConf

from flash_exp.files import write_json_atomic
from flash_exp.training.sweep_progress import DONE, FAILED, SKIPPED, STATUS_FILE, job_status, summary_table


def make_job(sweep, number, overrides, status, fid=None):
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    write_json_atomic(job / STATUS_FILE, {"status": status, "started": 0.0})
    if fid is not None:
        write_json_atomic(job / "eval" / "toy" / "student_nfe2.json", {"nfe": 2, "fid": fid, "clip_score": 0.5})
    return job


def test_the_summary_has_a_row_per_job_with_its_swept_value_status_and_scores(tmp_path):
    make_job(tmp_path, 0, ["loss=paper", "seed=0"], DONE, fid=12.5)
    make_job(tmp_path, 1, ["loss=distill_only", "seed=0"], FAILED)
    header, first, second, total = summary_table(tmp_path)
    assert "FID/CLIP @2" in header
    assert "loss=paper" in first and DONE in first and "12.50/0.500" in first and "seed" not in first
    assert "loss=distill_only" in second and FAILED in second
    assert total.startswith("2 job(s): 1 done, 1 failed")


def test_a_job_whose_completion_record_predates_it_was_skipped(tmp_path):
    (tmp_path / "COMPLETE").write_text("{}")
    assert job_status(tmp_path, time.time() + 1, failed=False) == SKIPPED
    assert job_status(tmp_path, time.time() - 60, failed=False) == DONE
    assert job_status(tmp_path, time.time() + 1, failed=True) == FAILED
