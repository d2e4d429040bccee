"""``python -m flash_exp.plan <the arguments of a run or a sweep>``: what it will cost, before launching.

    python -m flash_exp.plan experiment=fig5d_losses backbone=sd15
    python -m flash_exp.plan experiment=fig5h_k phases=k16,k32 --gpu a100
    python -m flash_exp.plan debug=fast

For every job of the sweep (one job for a run): its swept values, the data batches it trains, the
expected teacher calls per batch in each phase and an estimate of its GPU-hours, then the total.

The teacher's K-step rollout from start index i costs K - i solver steps, each one CFG call on 2B
samples, so a phase costs E_pi[K - i] calls per batch under its distribution pi. Around the rollout
a batch also runs the student forward and backward (about 3 teacher-sized forwards on B samples), the
discriminator's two feature passes (real and fake) when the adversarial term is on, and the DMD real
score (one CFG call) when DMD is on. The seconds per teacher evaluation come from
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

from flash_exp.config import ConfigError, TrainConfig, compose, register_configs, register_resolvers, validate
from flash_exp.training.overrides import normalise_overrides, sweep_points, swept_values

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS_FILE = REPO / "docs" / "benchmarks.json"

# Dense bf16 peak of one GPU, FLOP/s (vendor data sheets).
GPU_PEAK_FLOPS = {"h100": 989e12, "a100": 312e12, "l40s": 362e12, "a10": 125e12}
# Share of the peak a diffusion training step reaches (an assumption, typical of UNet/DiT training).
ASSUMED_UTILISATION = 0.35
# FLOPs of one denoiser forward on one sample at the reference resolution (approximate): SD1.5 from its
# published 339 G MACs at 512 px; the transformers as 2 x parameters x tokens plus attention; SDXL and
# the toy UNet scaled from SD1.5 by parameters and latent positions.
DENOISER_FLOPS = {"sd": (0.68e12, 512), "sdxl": (6.0e12, 1024), "pixart": (7.2e12, 1024),
                  "sd3": (20.6e12, 1024), "toy": (3.2e9, 32)}
STUDENT_FORWARDS = 3.0  # forward + backward of the student, in forwards


@dataclass(frozen=True)
class PhaseCost:
    name: str
    k: int
    batches: int
    rollout_calls: float  # E_pi[K - i]: CFG calls of 2B samples per batch
    forwards: float  # all teacher-sized forwards of B samples per batch


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
    def gpu_hours(self) -> float:
        return self.batches * self.seconds_per_batch * self.gpus / 3600


def expected_rollout_calls(cfg: TrainConfig, phase: int) -> float:
    """E_pi[K - i] for the phase's K and distribution pi."""
    from flash_exp.method.timesteps import timestep_distribution

    k, t = cfg.phases.k[phase], cfg.timesteps
    probs = timestep_distribution(t.distribution, k, t.mode_probs[phase], t.variance, t.gaussian_mean,
                                  t.gaussian_variance)
    return float(sum(p * (k - i) for i, p in enumerate(probs.tolist())))


def phase_costs(cfg: TrainConfig) -> list[PhaseCost]:
    """The phases as trained: ``trainer.max_steps`` (when set) cuts the schedule short."""
    left = cfg.trainer.max_steps or sum(cfg.phases.iterations)
    costs = []
    for i, (name, k, n) in enumerate(zip(cfg.phases.names, cfg.phases.k, cfg.phases.iterations, strict=True)):
        batches = min(n, left)
        left -= batches
        calls = expected_rollout_calls(cfg, i)
        gan = cfg.loss.adversarial.enabled and (cfg.loss.adversarial.weight[i] > 0
                                                or cfg.loss.adversarial.train_in_warmup)
        dmd = cfg.loss.dmd.enabled and cfg.loss.dmd.weight[i] > 0
        forwards = 2 * calls + STUDENT_FORWARDS + (2 if gan else 0) + (2 if dmd else 0)
        costs.append(PhaseCost(name, k, batches, calls, forwards))
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


def seconds_per_batch(cfg: TrainConfig, forwards: float, gpu: str) -> tuple[float, str]:
    """Seconds of one data batch that runs ``forwards`` teacher-sized forwards, and where the figure
    comes from."""
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
        return slope * (forwards - STUDENT_FORWARDS) + rest, (
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
    seconds, source = seconds_per_batch(cfg, mean_forwards, gpu)
    return JobPlan(overrides, cfg, phases, seconds, cfg.trainer.devices * cfg.trainer.num_nodes, source)


# ------------------------------------------------------------------------------------------- the sweep
def _compose(overrides: list[str]) -> DictConfig:
    return compose(overrides, return_hydra_config=True)


def sweep_jobs(args: list[str]) -> list[list[str]]:
    """The override list of every job (one for a single run), as Hydra's basic sweeper expands them:
    the file's ``hydra.sweeper.params`` first, the command line after."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(args)
    base = _compose([o.input_line for o in parsed if not o.is_sweep_override()])
    multirun = str(base.hydra.mode) == "RunMode.MULTIRUN" or any(o.is_sweep_override() for o in parsed)
    if not multirun:
        return [list(args)]
    return sweep_points(OmegaConf.to_container(base.hydra.sweeper.params) or {}, args)


def plan(args: list[str], gpu: str) -> list[JobPlan]:
    """Every job of the run or sweep that ``args`` describe, composed, validated and costed."""
    return [plan_job(overrides, validate(_compose(overrides)), gpu) for overrides in sweep_jobs(args)]


def format_table(jobs: list[JobPlan]) -> str:
    """One row per job (swept values, batches, batch size, K and E[K - i] per phase, s/batch, GPU-h),
    the total, and where the seconds come from."""
    lines = [f"{'job':>3}  {'swept':<36} {'batches':>8} {'B':>3}  {'K per phase':<14} "
             f"{'teacher calls/batch (2B each)':<30} {'s/batch':>8} {'GPU-h':>8}"]
    for i, (job, values) in enumerate(zip(jobs, swept_values([j.overrides for j in jobs]), strict=True)):
        ks = "/".join(str(p.k) for p in job.phases)
        calls = "/".join(f"{p.rollout_calls:.1f}" for p in job.phases)
        lines.append(f"{i:>3}  {' '.join(values) or '-':<36} {job.batches:>8} {job.cfg.data.batch_size:>3}  "
                     f"{ks:<14} {calls:<30} {job.seconds_per_batch:>8.3f} {job.gpu_hours:>8.3f}")
    total = sum(j.gpu_hours for j in jobs)
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
