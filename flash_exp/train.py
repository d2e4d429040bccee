"""``python -m flash_exp.train``: compose, validate, build, fit, export.

    python -m flash_exp.train                                  # the toy world on this machine
    python -m flash_exp.train backbone=sdxl trainer=gpu        # the paper's SDXL settings
    python -m flash_exp.train -m experiment=fig5d_losses hydra/launcher=slurm

On SLURM (``hydra/launcher=slurm``) each srun task is one rank; ``flash_exp.training.launch`` checks
the topology before any weight loads, checkpoints and requeues on preemption or time limit (the job
runs again in the same run directory and resumes), and a job that raises leaves ``<run_dir>/FAILED``.
With ``eval.after_train=true`` the run is evaluated once it is trained.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from flash_exp import plan
from flash_exp.config import (
    ConfigError,
    TrainConfig,
    TrainerConfig,
    register_configs,
    register_resolvers,
    validate,
)
from flash_exp.training import completion
from flash_exp.training.launch import preflight
from flash_exp.training.markers import clear_failure, record_failure_status, write_failure, write_interruption
from flash_exp.training.rank_digest import write_rank_digest
from flash_exp.training.resolvers import register_launcher_resolvers
from flash_exp.training.run_lock import RunDirectoryLocked, run_lock
from flash_exp.training.run_signals import RunInterrupted, StopSignals
from flash_exp.training.rundir import discard_unstarted
from flash_exp.training.signals import LAST_CKPT, signal_checkpoint

log = logging.getLogger("flash_exp.train")


def run_directory() -> Path:
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def resume_checkpoint(ckpt_dir: Path) -> str | None:
    """The newest intact checkpoint to resume from (``last.ckpt`` unless it is corrupt), or None."""
    from flash_exp.training.checkpoints import newest_intact

    path, passed_over = newest_intact(ckpt_dir)
    for note in passed_over:
        log.warning("%s; resuming from an older checkpoint", note)
    if path is None and passed_over:
        raise FileNotFoundError(f"no intact checkpoint in {ckpt_dir} to resume from: {'; '.join(passed_over)} "
                                "(move the run directory aside or pass trainer.resume=never to start afresh)")
    if path is not None:
        log.info("resuming from %s", path)
    return str(path) if path else None


def checkpoint_callback(ckpt_dir: Path, t: TrainerConfig):
    """Lightning's periodic checkpoints ``step_NNNNNN.ckpt`` plus ``last.ckpt``.

    ``keep_checkpoints``: the N highest steps ("step" is always among the monitored values). No
    version counter: ``last.ckpt`` is overwritten in place, never joined by a ``last-v1.ckpt`` (a
    resumed run finds the one its previous attempt or the signal checkpoint wrote)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    kept = {"save_top_k": t.keep_checkpoints, "monitor": "step", "mode": "max"} if t.keep_checkpoints \
        else {"save_top_k": -1}
    return ModelCheckpoint(dirpath=ckpt_dir, filename="step_{step:06d}", auto_insert_metric_name=False,
                           every_n_train_steps=t.checkpoint_every, save_last=True, enable_version_counter=False,
                           **kept)


def train(cfg: TrainConfig, run_dir: Path, stops: StopSignals | None = None) -> Path:
    """Fit the student described by ``cfg`` in ``run_dir``; returns the export directory.

    ``stops``: the run's stop signals; the fit, its final grid and the save of ``last.ckpt`` run with
    them deferred (see :mod:`flash_exp.training.run_signals`)."""
    import lightning as L

    from flash_exp.export import export_student, latest_grid
    from flash_exp.training.checkpoints import checkpoint_step, load_checkpoint
    from flash_exp.training.console import quiet_console
    from flash_exp.training.datamodule import FlashDataModule
    from flash_exp.training.loggers import build_loggers
    from flash_exp.training.module import FlashModule
    from flash_exp.training.progress import OneDrawProgressBar
    from flash_exp.training.samples import SampleGridCallback
    from flash_exp.training.sharding import full_parameters, is_fsdp
    from flash_exp.training.student import load_run

    quiet_console()

    saved = run_dir / ".hydra" / "config.yaml"  # Hydra writes it for CLI runs; in-process runs need it too
    if not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.structured(cfg), saved)
    t = cfg.trainer
    launch = preflight(t)  # SLURM topology and strategy, before any weight loads
    log.info("%s", launch.describe())
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    max_steps = t.max_steps or sum(cfg.phases.iterations)
    ckpt_dir = run_dir / "checkpoints"
    module = FlashModule(cfg)
    prompts = list(cfg.data.prompts)[: t.num_sample_prompts] or ["a photo of a cat"]
    ckpt_path = resume_checkpoint(ckpt_dir) if t.resume == "auto" else None
    if ckpt_path:
        module.check_fits(load_checkpoint(ckpt_path)["state_dict"])
    resume_step = checkpoint_step(ckpt_path) if ckpt_path else 0
    loggers = build_loggers(cfg.logger, run_dir, cfg.run_name, resume_step)
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=launch.strategy,
        plugins=launch.plugins,
        precision=t.precision,
        max_steps=max_steps,
        max_epochs=-1,
        logger=loggers,
        log_every_n_steps=t.log_every,
        enable_model_summary=False,
        callbacks=[
            checkpoint_callback(ckpt_dir, t),
            signal_checkpoint(ckpt_dir, stops),
            SampleGridCallback(run_dir / "samples", prompts, list(t.sample_nfe), t.sample_every, cfg.seed,
                               to_trackers=cfg.logger.log_images),
            OneDrawProgressBar(refresh_rate=max(1, t.log_every)),
        ],
    )
    last = ckpt_dir / "last.ckpt"
    with (stops or StopSignals()).deferred():
        trainer.fit(module, datamodule=FlashDataModule(cfg), ckpt_path=ckpt_path)
        trainer.save_checkpoint(last)
    log.info("%s", module.data_summary())
    with full_parameters(trainer):  # collective under FSDP: every rank gathers its weights
        write_rank_digest(run_dir, trainer, module)
    export_dir = run_dir / "export"
    if trainer.is_global_zero:
        backbone = module.backbone
        if is_fsdp(trainer):  # the sharded module holds no whole denoiser: the student of last.ckpt
            backbone = load_run(run_dir)[1].backbone
        export_student(backbone, cfg, export_dir, latest_grid(run_dir), trainer.global_step)
        log.info("exported the student to %s", export_dir)
    return export_dir


def evaluate_run(cfg: TrainConfig, run_dir: Path) -> None:
    """Score the trained run with :mod:`flash_exp.evaluation` (the benchmarks of ``eval``; ``eval.settings``
    holds keys of conf/evaluate.yaml such as ``student_nfe`` or ``device``)."""
    from dataclasses import asdict

    from flash_exp.evaluation import EvaluateConfig, evaluate

    settings = OmegaConf.merge(OmegaConf.structured(EvaluateConfig), dict(cfg.eval.settings),
                               {"eval": asdict(cfg.eval), "run_dir": str(run_dir), "runs_dir": None})
    code = evaluate(OmegaConf.to_object(settings))  # type: ignore[arg-type]
    if code != 0:
        raise RuntimeError(f"the evaluation of {run_dir} returned {code}: see {run_dir}/eval/status.json")


def mark_failed(run_dir: Path, err: BaseException, benchmarks: list[str]) -> None:
    """``<run_dir>/FAILED`` and a "failed" evaluation status, so the leaderboard lists the run."""
    path = write_failure(run_dir, err)
    log.error("run failed, marked in %s: %s: %s", path, type(err).__name__, err)
    try:
        record_failure_status(run_dir, list(benchmarks))
    except Exception:  # noqa: BLE001 (the marker is what matters; `make eval` records it as well)
        log.exception("could not record the failure in %s/eval/status.json", run_dir)


def interruption(stop: BaseException, signum: int | None = None) -> tuple[str, int]:
    """What stopped the run (the marker's reason) and the non-zero code the process exits with:
    ``signum``, the stop signal the run received, when known; else what ``stop`` says."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if signum is None and isinstance(stop, RunInterrupted):
        signum = stop.signum
    if signum is None and isinstance(stop, SIGTERMException):
        signum = signal.SIGTERM
    if signum is None and isinstance(stop, KeyboardInterrupt):
        signum = signal.SIGINT
    if signum is not None:
        return signal.Signals(signum).name, 128 + int(signum)
    code = stop.code if isinstance(stop, SystemExit) and isinstance(stop.code, int) and stop.code else 1
    name = signal.Signals(code - 128).name if 128 < code < 128 + signal.NSIG else f"exit code {code}"
    return name, code


def mark_interrupted(run_dir: Path, stop: BaseException, benchmarks: list[str], signum: int | None = None) -> int:
    """``<run_dir>/INTERRUPTED`` and an "interrupted" evaluation status, the ``COMPLETE`` record
    removed; returns the exit code."""
    how, code = interruption(stop, signum)
    completion.clear(run_dir)
    saved = (run_dir / "checkpoints" / LAST_CKPT).is_file()
    path = write_interruption(run_dir, f"stopped by {how} " + (
        f"after saving checkpoints/last.ckpt; relaunch in {run_dir} to resume" if saved
        else "before its first checkpoint"))
    log.warning("run interrupted by %s, marked in %s; exiting with %d", how, path, code)
    try:
        record_failure_status(run_dir, list(benchmarks))
    except Exception:  # noqa: BLE001 (the marker is what matters)
        log.exception("could not record the interruption in %s/eval/status.json", run_dir)
    return code


def run(cfg: TrainConfig, run_dir: Path) -> Path:
    """Train in ``run_dir`` (resuming there), then evaluate when ``eval.after_train`` (global rank 0).

    A training error leaves ``<run_dir>/FAILED`` before it propagates: SLURM and submitit report a
    Hydra job that raised as completed. A stop signal (SIGTERM, SIGINT, a requeue signal) in any phase
    (loading, the fit and its final grid, the export, the evaluation) leaves ``<run_dir>/INTERRUPTED``,
    removes ``COMPLETE`` and exits with 128 + the signal number; during the fit ``last.ckpt`` is saved
    first (:mod:`flash_exp.training.run_signals`), and a relaunch resumes from it and runs the phases
    that remain. An evaluation error is recorded by the evaluation itself. A run already trained,
    exported and evaluated with this very config is skipped before any model loads (a relaunched sweep
    costs nothing for its finished jobs)."""
    done = completion.up_to_date(cfg, run_dir)
    if done:
        log.info("%s: %s: skipped", run_dir, done)
        return run_dir / "export"
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    stops = StopSignals()
    try:
        with stops.installed():
            completion.clear(run_dir)
            clear_failure(run_dir)
            try:
                export_dir = train(cfg, run_dir, stops)
            except Exception as err:
                mark_failed(run_dir, err, cfg.eval.benchmarks)
                raise
            if getattr(rank_zero_only, "rank", 0) != 0:
                return export_dir
            completion.mark_trained(cfg, run_dir, cfg.trainer.max_steps or sum(cfg.phases.iterations))
            if cfg.eval.after_train:
                evaluate_run(cfg, run_dir)
                completion.mark_evaluated(cfg, run_dir)
    # Lightning's SIGTERMException is a SystemExit; so is a requeue handler's exit
    except (SystemExit, KeyboardInterrupt, RunInterrupted) as stop:
        raise SystemExit(mark_interrupted(run_dir, stop, cfg.eval.benchmarks, stops.received)) from None
    return export_dir


def _multirun() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


register_configs()
register_resolvers()
register_launcher_resolvers()
plan.register_comment_resolver()  # the SLURM job comment


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # again here: a submitit job unpickles this function without running this module's top level
    register_resolvers()
    register_launcher_resolvers()
    plan.register_comment_resolver()
    run_dir = run_directory()
    try:
        with run_lock(run_dir):  # before anything is written there: one live run per directory
            launch(cfg, run_dir)
    except RunDirectoryLocked as err:
        if _multirun():
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def launch(cfg: DictConfig, run_dir: Path) -> None:
    """Validate, check the teacher, train (and evaluate) in ``run_dir``.

    A config error (a value, the teacher's files, the cluster topology) prints once and exits 2; before
    training starts it also removes what Hydra made of the run directory (no FAILED row on the
    leaderboard). In a sweep every error propagates, the job marked FAILED: Hydra records it and the
    sweep goes on."""
    from flash_exp.backbones.hub import TeacherNotFoundError, resolve_pretrained
    from flash_exp.training.preflight import check_against_pretrained

    started = False
    try:
        typed = validate(cfg)
        # the teacher's files before torch and diffusers load (without network this fails in seconds),
        # then the values that need its config files (resolution, K, scheduler names), before its weights
        local = resolve_pretrained(typed.backbone.pretrained, typed.backbone.revision, typed.backbone.variant)
        check_against_pretrained(typed, local)
        started = True
        run(typed, run_dir)  # marks its own failures
    except Exception as err:
        if isinstance(err, ConfigError | TeacherNotFoundError | NotADirectoryError) and not _multirun():
            print(f"error: {err}", file=sys.stderr, flush=True)
            if not started:
                discard_unstarted(run_dir)
            sys.exit(2)
        if not started:
            mark_failed(run_dir, err, list(cfg.get("eval", {}).get("benchmarks", [])))
        raise
    print(f"run directory: {run_dir}")


if __name__ == "__main__":
    from flash_exp.config import exit_on_config_error
    from flash_exp.training.overrides import normalise_overrides

    sys.argv[1:] = normalise_overrides(sys.argv[1:])
    exit_on_config_error(sys.argv[1:], "train")  # before Hydra makes a run directory
    main()
