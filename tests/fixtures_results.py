"""Constructed result trees for the leaderboard tests: runs with a composed config, overrides and
result files as the evaluator writes them (numbers made up, spec built by the real functions).

A test module imports the helpers it needs from here (``from tests.fixtures_results import ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from flash_exp.files import write_json_atomic
from flash_exp.metrics.results import RESULT_KIND, result_path
from flash_exp.metrics.spec import (
    SamplerSetting,
    eval_spec,
    protocol_hash,
    protocol_spec,
    sampler_spec,
    spec_hash,
)

FEATURES = {"name": "toy-clip", "input_size": 32, "weights_sha256": "a" * 64}
CLIP = {"model": "toy", "pretrained": "toy", "weights_sha256": "b" * 64}
TEACHER = {"family": "sd", "pretrained": "/assets/toy-teacher", "revision": None, "variant": None,
           "dtype": "float32"}


def run_config(seed: int, axis: dict[str, Any], reference: dict[str, str] | None = None,
               steps: int = 60, **extra: Any) -> dict[str, Any]:
    """A composed config of a toy run: ``axis`` merged over a fixed base, the seed, the reference."""
    base = {"backbone": {"name": "toy", "guidance_range": [3.0, 6.0]}, "method": {"name": "flash"},
            "timesteps": {"distribution": "mixture"}, "loss": {"adversarial": {"type": "lsgan"}},
            "trainer": {"max_steps": None, "optim": {"lr": 0.001}}, "phases": {"iterations": [steps]},
            "seed": seed, "run_name": "${backbone.name}-${task.name}", "reference": reference or {}}
    return OmegaConf.to_container(OmegaConf.merge(base, axis, extra))  # type: ignore[return-value]


def write_run(run: Path, config: dict[str, Any], overrides: list[str]) -> Path:
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(config), run / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run / ".hydra" / "overrides.yaml")
    return run


def write_result(run: Path, sampler: str, nfe: int, fid: float, clip: float = 0.3, benchmark: str = "toy",
                 sweep: Path | None = None, **fields: Any) -> dict[str, Any]:
    """One result file of ``run``; ``fields`` adds the newer keys (fid_std, recall, gallery, ...)."""
    setting = SamplerSetting(sampler, nfe, 0.0 if sampler == "student" else 5.0)
    protocol = protocol_spec(benchmark, "d" * 64, 256, 32, 0, FEATURES, {"count": 256, "sha256": "c" * 64,
                                                                         "source": "toy"}, CLIP, False)
    spec = eval_spec(protocol, sampler_spec(setting, {"name": "LCMScheduler"}, 32))
    model = {"kind": sampler, **TEACHER, **({"lora_sha256": str(run)} if sampler == "student" else {})}
    result = {"kind": RESULT_KIND, "run": str(run), "sweep": str(sweep) if sweep else None, "benchmark": benchmark,
              "setting": setting.name, "sampler": sampler, "nfe": nfe, "guidance": setting.guidance, "fid": fid,
              "clip_score": clip, "num_images": 256, "spec_hash": spec_hash(spec),
              "protocol_hash": protocol_hash(spec), "spec": spec, "model": model, **fields}
    write_json_atomic(result_path(run, benchmark, setting.name), result)
    return result


def write_sweep(sweep: Path, experiment: str, key: str, reference: str,
                fids: dict[str, dict[int, list[float]]], axis_of: Any, clip: float = 0.3) -> list[Path]:
    """A sweep of ``experiment`` over ``key`` with training seeds: ``fids[value][nfe]`` lists the FID of
    seeds 0, 1, ...; ``axis_of(value)`` is the config part that value sets. Jobs are numbered as Hydra's
    basic sweeper numbers them (value outer, seed inner)."""
    runs, job = [], 0
    for value, by_nfe in fids.items():
        for seed in range(len(next(iter(by_nfe.values())))):
            run = write_run(sweep / str(job), run_config(seed, axis_of(value), {key: reference}),
                            [f"{key}={value}", f"experiment={experiment}", f"seed={seed}"])
            for nfe, values in by_nfe.items():
                write_result(run, "student", nfe, values[seed], clip, sweep=sweep)
            runs.append(run)
            job += 1
    return runs
