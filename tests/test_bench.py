"""The benchmark runs and its counts are those of one teacher rollout per batch."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest

from flash_exp.bench import K, bench_evaluation, main

pytestmark = pytest.mark.slow


def test_bench_counts_and_report(tmp_path):
    out = tmp_path / "benchmarks.md"
    result = main(["--batches", "1", "--warmup", "0", "--skip-eval", "--out", str(out)])
    rows = {r["label"]: r for r in result["training"]}
    index0 = next(r for label, r in rows.items() if label.startswith("start index 0 "))
    # K steps x 2 (batched CFG) + DMD real score (2) + GAN fake features (1) + real features (1)
    assert index0["teacher_evals"] == 2 * K + 4 <= 70
    assert index0["student_evals"] == 2  # the student step + the DMD fake score
    index24 = next(r for label, r in rows.items() if label.startswith("start index 24 "))
    assert index24["teacher_evals"] == 2 * (K - 24) + 4
    second = next(r for label, r in rows.items() if label.startswith("before: second teacher rollout"))
    assert second["teacher_evals"] == 2 * (2 * K + 3) + 1
    warmup = next(r for label, r in rows.items() if label.startswith("warm-up phase"))
    assert warmup["teacher_evals"] == 2 * K + 2  # rollout + the discriminator's features, no DMD
    assert "| start index 0" in out.read_text()
    assert json.loads(out.with_suffix(".json").read_text())["batches"] == 1
    assert [r["sampler"].split(" NFE")[0] for r in result["sampling"]][:3] == ["student 1", "student 2", "student 4"]


def test_evaluation_throughput_uses_the_shipped_toy_clip(monkeypatch):
    """Images per second = repeats x images / the timed span, on a clock that ticks 0.25 s per reading."""
    ticks = itertools.count()
    monkeypatch.setitem(bench_evaluation.__globals__, "time", SimpleNamespace(perf_counter=lambda: 0.25 * next(ticks)))
    rows = bench_evaluation(3, count=8)
    assert [r["stage"] for r in rows] == ["toy FID features (toy CLIP image tower)", "toy CLIP score (image + text towers)"]
    assert [r["images_per_s"] for r in rows] == [pytest.approx(3 * 8 / 0.25)] * 2
