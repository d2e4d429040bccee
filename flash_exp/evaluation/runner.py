"""Evaluating one run or every run under a directory, and recording each run's status.

Failed and unfinished runs get an ``eval/status.json`` saying so, evaluated runs one saying
``evaluated``, runs whose evaluation raised one saying ``eval_error``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flash_exp.evaluation.scoring import Scorer
from flash_exp.evaluation.settings import EvaluateConfig
from flash_exp.evaluation.text_to_image import score_t2i_run
from flash_exp.training.rundir import CONFIG_FILE, READY, find_runs, run_state, run_task, write_status

log = logging.getLogger("flash_exp.evaluate")


def score_run(scorer: Scorer, run_dir: Path) -> list[dict[str, Any]]:
    """Every configured benchmark x sampler setting of ``run_dir`` (a text-to-image or a task run)."""
    if run_task(run_dir) != "t2i":
        from flash_exp.evaluation.task_runs import score_task_run  # the training stack: task runs only

        return score_task_run(scorer, Path(run_dir))
    return score_t2i_run(scorer, run_dir)


def evaluate(settings: EvaluateConfig) -> int:
    """Evaluate ``run_dir`` or every run under ``runs_dir``; returns a process exit code.

    Failed and unfinished runs get an ``eval/status.json`` saying so. Exit code 1 when the given
    ``run_dir`` is not ready, or when evaluating some run under ``runs_dir`` raised; 0 otherwise.
    """
    scorer = Scorer(settings)
    benchmarks = list(settings.eval.benchmarks)
    for name in benchmarks:  # every metric's package and weights, before any benchmark loads a model
        scorer.check_metrics(scorer.benchmark_config(name))
    for name in benchmarks:
        scorer.prepare(name)
    if settings.run_dir is not None:
        runs = [Path(settings.run_dir)]
        if not (runs[0] / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"run_dir={runs[0]} is not a training run: no {CONFIG_FILE}")
    else:
        runs = find_runs(Path(settings.runs_dir))
        log.info("%d runs under %s", len(runs), settings.runs_dir)
    code = 0
    for run in runs:
        state = run_state(run)
        if state.status != READY:
            log.warning("%s: %s (%s), recorded and skipped", run, state.status, state.reason)
            write_status(run, state.status, state.reason, benchmarks)
            code = 1 if settings.run_dir is not None else code
            continue
        try:
            score_run(scorer, run)
        except Exception as err:
            write_status(run, "eval_error", f"{type(err).__name__}: {err}", benchmarks)
            if settings.run_dir is not None:
                raise
            log.exception("%s: evaluation failed", run)
            code = 1
            continue
        write_status(run, "evaluated", "", benchmarks)
    return code
