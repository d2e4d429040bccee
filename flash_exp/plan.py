"""``python -m flash_exp.plan <the arguments of a run or a sweep>``: what it will cost, before launching.

    python -m flash_exp.plan experiment=fig5d_losses backbone=sd15
    python -m flash_exp.plan experiment=fig5h_k phases=k16,k32 --gpu a100
    python -m flash_exp.plan debug=fast

For every job of the sweep (one job for a run): its swept values, method, the data batches it trains,
the expected teacher evaluations per batch in each phase and their mean over the job, and an estimate
of its GPU-hours, then the total.

Teacher evaluations are counted as training logs ``cost/teacher_evals_per_batch`` (a 2B CFG call
counts 2), each method by its own model (:mod:`flash_exp.method.cost`): Flash's K-step rollout from a
start index i drawn from the phase's pi takes K - i solver steps, each a CFG call on 2B samples, plus
the GAN's feature passes and the DMD real score; LCM takes one solver step with CFG per batch; DMD2
calls the real score (one CFG call) on one batch in ``method.dmd2.fake_updates``. The seconds count
every denoiser pass of a batch (student, fake score, backward) as well. The seconds per evaluation come from
``docs/benchmarks.json`` where it measured this kind of model on this kind of device (the toy world
on a CPU), else from a FLOP estimate of the backbone's denoiser at an assumed share of a GPU's peak;
each line says which.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from flash_exp.config import (
    ConfigError,
    TrainConfig,
    compose,
    composition_error,
    register_configs,
    register_resolvers,
    validate,
)
from flash_exp.config.reference import check_reference
from flash_exp.training.overrides import normalise_overrides, sweep_points, swept_values

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_FILE = REPO / "docs" / "benchmarks.json"

# Dense bf16 peak of one GPU, FLOP/s (vendor data sheets).
GPU_PEAK_FLOPS = {"h100": 989e12, "a100": 312e12, "l40s": 362e12, "a10": 125e12}
# Share of the peak a diffusion training step reaches (an assumption, typical of UNet/DiT training).
ASSUMED_UTILISATION = 0.35
# FLOPs of one denoiser forward on one sample at the reference resolution (approximate): SD1.5 from its
# published 339 G MACs at 512 px; the transformers as 2 x parameters x tokens plus attention (FLUX.1:
# 2 x 11.9e9 x (4096 + 512) + 57 blocks x 4 x 4608^2 x 3072); SDXL and
# the toy UNet scaled from SD1.5 by parameters and latent positions. SD3.5 (config name, family sd3):
# 2 x transformer parameters (2.24 B Medium, 8.06 B Large) x 4,429 joint tokens at 1024 px, plus the joint
# attention and, for Medium's 13 dual attention blocks, the image-only attention over 4,096 tokens.
DENOISER_FLOPS = {"sd": (0.68e12, 512), "sdxl": (6.0e12, 1024), "pixart": (7.2e12, 1024),
                  "sd3": (20.6e12, 1024), "sd35": (24.1e12, 1024), "sd35_large": (78.6e12, 1024),
                  "flux": (124.6e12, 1024), "toy": (3.2e9, 32)}


@dataclass(frozen=True)
class PhaseCost:
    name: str
    k: int | None  # the teacher's K (Flash); None for the methods without a K-step rollout
    batches: int
    teacher_evals: float  # teacher evaluations of B samples per batch (a 2B CFG call counts 2)
    forwards: float  # all denoiser-sized passes of B samples per batch


@dataclass(frozen=True)
class JobPlan:
    overrides: list[str]
    cfg: TrainConfig
    phases: list[PhaseCost]
    seconds_per_batch: float
    gpus: int
    source: str

    @property
    def batches(self) -> int:
        return sum(p.batches for p in self.phases)

    @property
    def teacher_evals(self) -> float:
        """The mean teacher evaluations per batch over the job: what training's running mean ends at."""
        return sum(p.teacher_evals * p.batches for p in self.phases) / max(1, self.batches)

    @property
    def gpu_hours(self) -> float:
        return self.batches * self.seconds_per_batch * self.gpus / 3600


def expected_rollout_calls(cfg: TrainConfig, phase: int) -> float:
    """E_pi[K - i]: Flash's CFG calls of 2B samples per batch in ``phase``."""
    from flash_exp.method.cost import expected_rollout_steps  # torch: not before a launch needs it

    return expected_rollout_steps(cfg, phase)


def phase_costs(cfg: TrainConfig) -> list[PhaseCost]:
    """The phases as trained: ``trainer.max_steps`` (when set) cuts the schedule short."""
    from flash_exp.method.cost import phase_cost

    left = cfg.trainer.max_steps or sum(cfg.phases.iterations)
    costs, step = [], 0
    for i, (name, k, n) in enumerate(zip(cfg.phases.names, cfg.phases.k, cfg.phases.iterations, strict=True)):
        batches = min(n, left)
        left -= batches
        cost = phase_cost(cfg, i, step, batches)
        step += batches
        costs.append(PhaseCost(name, k if cfg.method.name == "flash" else None, batches, cost.teacher_evals,
                               cost.forwards))
    return costs


def measured_seconds_per_forward(path: Path = BENCHMARKS_FILE) -> tuple[float, float, int, str] | None:
    """(seconds per teacher forward, seconds per batch besides them, bench batch size, device) fitted on
    the bench's "start index <i>" rows, or None without the file."""
    try:
        bench = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rows = [r for r in bench.get("training", []) if str(r.get("label", "")).startswith("start index")
            and "drawn" not in r["label"]]
    if len(rows) < 2:
        return None
    xs, ys = [float(r["teacher_evals"]) for r in rows], [float(r["median_s"]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    batch = 4  # docs/benchmarks.md: the bench trains batches of 4
    return slope, my - slope * mx, batch, str(bench.get("device", "CPU"))


def measured_full_size(cfg: TrainConfig, gpu: str, path: Path | None = None) -> tuple[float, float, str] | None:
    """(seconds per teacher evaluation of B samples, seconds per batch besides them, device) fitted on
    the full-size bench's two start indices (``docs/benchmarks.json``'s ``full_size``) of this backbone,
    resolution, batch, frozen dtype, checkpointing and offload on a GPU whose name contains ``gpu``;
    None without such a measurement."""
    try:
        runs = json.loads((path or BENCHMARKS_FILE).read_text()).get("full_size", {})
    except (OSError, ValueError):
        return None
    want = {"backbone": cfg.backbone.name, "resolution": cfg.backbone.resolution, "batch_size": cfg.data.batch_size,
            "frozen_dtype": cfg.backbone.dtype, "gradient_checkpointing": cfg.backbone.gradient_checkpointing,
            "offload_frozen": cfg.trainer.offload_frozen}
    for device, run in runs.items():
        if run.get("device_type") != "cuda" or gpu.lower() not in device.lower():
            continue
        for case in run.get("cases", []):
            rows = case.get("rows", [])
            if all(case.get(k) == v for k, v in want.items()) and len(rows) >= 2:
                (x0, y0), (x1, y1) = [(float(r["teacher_evals"]), float(r["median_s"])) for r in rows[:2]]
                slope = (y1 - y0) / (x1 - x0)
                return slope, y0 - slope * x0, device
    return None


def seconds_per_batch(cfg: TrainConfig, forwards: float, teacher_evals: float, gpu: str) -> tuple[float, str]:
    """Seconds of one data batch that runs ``forwards`` denoiser-sized passes, ``teacher_evals`` of them
    teacher evaluations (what the full-size bench's line is fitted on), and where the figure comes from."""
    on_cpu = cfg.trainer.accelerator == "cpu" or (cfg.trainer.accelerator == "auto" and not _has_cuda())
    measured = measured_seconds_per_forward()
    if cfg.backbone.name == "toy" and on_cpu and measured is not None:
        slope, rest, batch, device = measured
        scale = cfg.data.batch_size / batch
        return (slope * forwards + rest) * scale, (
            f"measured: {slope:.4f} s per teacher forward of {batch} samples on {device} "
            f"(docs/benchmarks.json, its SD1.5-shaped bench model), scaled to batch {cfg.data.batch_size}")
    full_size = None if on_cpu else measured_full_size(cfg, gpu)
    if full_size is not None:
        slope, rest, device = full_size
        return slope * teacher_evals + rest, (
            f"measured: {slope:.3f} s per teacher evaluation of {cfg.data.batch_size} samples + {rest:.2f} s per "
            f"batch besides, {cfg.backbone.name} at {cfg.backbone.resolution} px on {device} "
            f"(docs/benchmarks.json, the full-size bench)")
    flops, resolution = DENOISER_FLOPS.get(cfg.backbone.name, DENOISER_FLOPS[cfg.backbone.family])
    per_forward = flops * (cfg.backbone.resolution / resolution) ** 2 * cfg.data.batch_size
    rate = GPU_PEAK_FLOPS[gpu] * ASSUMED_UTILISATION
    return forwards * per_forward / rate, (
        f"FLOP-based estimate (not measured): {flops / 1e12:.3g} TFLOP per denoiser forward at "
        f"{resolution} px, one {gpu.upper()} at {ASSUMED_UTILISATION:.0%} of its bf16 peak")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def plan_job(overrides: list[str], cfg: TrainConfig, gpu: str) -> JobPlan:
    phases = phase_costs(cfg)
    batches = sum(p.batches for p in phases) or 1
    mean_forwards = sum(p.forwards * p.batches for p in phases) / batches
    mean_teacher_evals = sum(p.teacher_evals * p.batches for p in phases) / batches
    seconds, source = seconds_per_batch(cfg, mean_forwards, mean_teacher_evals, gpu)
    return JobPlan(overrides, cfg, phases, seconds, cfg.trainer.devices * cfg.trainer.num_nodes, source)


# ------------------------------------------------------------------------------------------- the sweep
def _compose(overrides: list[str]) -> DictConfig:
    return compose(overrides, return_hydra_config=True)


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The override list of every job (one for a single run), as Hydra's basic sweeper expands them:
    the file's ``hydra.sweeper.params`` first, the command line after."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(args)
    except OverrideParseException as err:
        raise composition_error(err, args) from None
    base = _compose([o.input_line for o in parsed if not o.is_sweep_override()])
    multirun = str(base.hydra.mode) == "RunMode.MULTIRUN" or any(o.is_sweep_override() for o in parsed)
    if not multirun:
        return [list(args)]
    params = base.hydra.sweeper.params  # None without an experiment file that sweeps
    return sweep_points(OmegaConf.to_container(params) if params is not None else {}, args)


def plan(args: list[str], gpu: str) -> list[JobPlan]:
    """Every job of the run or sweep that ``args`` describe, composed, validated and costed; a sweep's
    ``reference`` must be one of the values it sweeps."""
    jobs = [(overrides, validate(_compose(overrides))) for overrides in sweep_jobs(args)]
    for _, cfg in jobs[:1]:
        check_reference(cfg.reference, [overrides for overrides, _ in jobs])
    return [plan_job(overrides, cfg, gpu) for overrides, cfg in jobs]


def format_table(jobs: list[JobPlan]) -> str:
    """One row per job (swept values, method, batches, batch size, K and teacher evaluations per batch of
    each phase and their mean, s/batch, GPU-h), the total, and where the seconds come from."""
    lines = [f"{'job':>3}  {'swept':<36} {'method':<6} {'batches':>8} {'B':>3}  {'K per phase':<14} "
             f"{'teacher evals/batch per phase':<30} {'mean':>6} {'s/batch':>8} {'GPU-h':>8}"]
    for i, (job, values) in enumerate(zip(jobs, swept_values([j.overrides for j in jobs]), strict=True)):
        ks = "/".join(str(p.k) if p.k is not None else "-" for p in job.phases)
        evals = "/".join(f"{p.teacher_evals:.1f}" for p in job.phases)
        lines.append(f"{i:>3}  {' '.join(values) or '-':<36} {job.cfg.method.name:<6} {job.batches:>8} "
                     f"{job.cfg.data.batch_size:>3}  {ks:<14} {evals:<30} {job.teacher_evals:>6.2f} "
                     f"{job.seconds_per_batch:>8.3f} {job.gpu_hours:>8.3f}")
    total = sum(j.gpu_hours for j in jobs)
    lines.append("teacher evals: teacher evaluations of B samples per data batch, as training logs "
                 "cost/teacher_evals_per_batch (a 2B CFG call counts 2)")
    lines.append(f"total: {len(jobs)} job(s), {sum(j.batches for j in jobs)} data batches, {total:.3f} GPU-hours "
                 f"({total * 60:.1f} device-minutes)")
    for source in dict.fromkeys(j.source for j in jobs):
        lines.append(f"seconds per batch: {source}")
    return "\n".join(lines)


def slurm_comment(*, _root_: DictConfig) -> str:
    """``${plan_comment:}``: the estimate of the sweep's base config, for SLURM's ``--comment``. Never
    raises: a job that cannot be estimated still launches (and fails, if it must, with its own error)."""
    try:
        job = plan_job([], validate(_root_), "h100")
    except Exception as err:  # noqa: BLE001 (a comment must not stop a launch)
        return f"flash_exp plan: no estimate ({type(err).__name__})"
    return (f"flash_exp plan: {job.batches} batches/job, ~{job.gpu_hours:.2f} GPU-h/job "
            f"({'measured' if job.source.startswith('measured') else 'FLOP estimate, H100'})")


def register_comment_resolver() -> None:
    """``${plan_comment:}``, used by ``conf/hydra/launcher/slurm.yaml``."""
    if not OmegaConf.has_resolver("plan_comment"):
        OmegaConf.register_new_resolver("plan_comment", slurm_comment)


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m flash_exp.plan", description=__doc__.splitlines()[0])
    cli.add_argument("--gpu", choices=sorted(GPU_PEAK_FLOPS), default="h100",
                     help="GPU assumed by the FLOP-based estimate (default h100)")
    cli.add_argument("overrides", nargs="*", help="the arguments of python -m flash_exp.train [-m]")
    known, rest = cli.parse_known_args(argv)
    args = normalise_overrides([a for a in known.overrides + rest if a not in ("-m", "--multirun")])
    register_configs()
    register_resolvers()
    from flash_exp.training.resolvers import register_launcher_resolvers

    register_launcher_resolvers()
    register_comment_resolver()
    try:
        jobs = plan(args, known.gpu)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
