"""``python -m flash_exp.bench`` (``make bench``): speed and memory of the training step and sampling.

For each start index of the K-step teacher schedule (the four mixture modes, then drawn from the
phase's distribution) the table gives seconds per data batch (median and min over N batches after
warm-up), the batch-B teacher and student evaluations per batch (counted on the denoiser's calls:
a 2B CFG call counts 2), and peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on GPU).
The "before" rows time the naive variants the step avoids: a second teacher rollout for the
discriminator update, CFG as two calls, ``no_grad`` instead of ``inference_mode``, the classic
attention processor instead of PyTorch SDPA, and the zero-weight losses computed anyway.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from flash_exp.bench.full_size import (
    BACKBONES,
    GPU_PRESETS,
    PAPER_BACKBONES,
    bench_full_size,
    default_cases,
    evaluation_throughput,
    results_json,
)
from flash_exp.bench.reference import build_reference_pipeline
from flash_exp.bench.report import (
    device_description,
    render,
    render_full_size,
    versions,
    with_full_size_section,
)
from flash_exp.bench.sections import bench_evaluation, bench_sampling, bench_training

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> dict:
    """Run the bench, print the report, write it to ``--out`` and its numbers beside it as JSON."""
    parser = argparse.ArgumentParser(prog="python -m flash_exp.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=None,
                        help="timed batches per configuration (default 5; 3 with --full-size)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--skip-eval", action="store_true", help="skip the evaluation throughput section")
    full = parser.add_argument_group("full size", "the paper backbones' real architectures (random weights)")
    full.add_argument("--full-size", action="store_true", help="bench the full-size backbones instead")
    full.add_argument("--cases", default=",".join(PAPER_BACKBONES),
                      help=f"backbones, comma-separated: {', '.join(BACKBONES)} (default: {', '.join(PAPER_BACKBONES)})")
    full.add_argument("--presets", default=None,
                      help=f"memory presets, comma-separated (default: {', '.join(GPU_PRESETS)} on a GPU, cpu on a CPU)")
    full.add_argument("--resolution", type=int, default=None, help="pixels (default: each backbone's paper resolution)")
    full.add_argument("--batch-size", type=int, default=None, help="default: each preset's")
    full.add_argument("--budget-s", type=float, default=None, help="skip the cases that would start after this")
    full.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="a training-config override for every case (repeatable), e.g. "
                           "backbone.discriminator.head=generic below the paper resolution")
    full.add_argument("--work-dir", type=Path, default=None, help="where the pipeline directories are written")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    if args.full_size:
        return main_full_size(args, device, parser, argv)
    args.batches = 5 if args.batches is None else args.batches
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = build_reference_pipeline(Path(tmp) / "reference")
        training = bench_training(pretrained, device, args.batches, args.warmup)
        sampling = bench_sampling(pretrained, device, max(1, args.batches // 2))
    evaluation = [] if args.skip_eval else bench_evaluation(max(1, args.batches))
    name = device_description(device)
    report = render(name, training, sampling, evaluation, args.batches, args.warmup)
    previous = _read_json(args.out.with_suffix(".json"))
    if previous.get("full_size"):
        report = with_full_size_section(report, previous["full_size"])
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    result = {"device": name, "training": [r.__dict__ for r in training], "sampling": sampling,
              "evaluation": evaluation, "batches": args.batches, "warmup": args.warmup}
    if previous.get("full_size"):
        result["full_size"] = previous["full_size"]
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main_full_size(args: argparse.Namespace, device: torch.device, parser: argparse.ArgumentParser,
                   argv: list[str] | None) -> dict:
    """``--full-size``: run the cases, then put their run record into ``docs/benchmarks.json``'s
    ``full_size`` (keyed by device) and re-render the report's full-size section, keeping the rest."""
    backbones = [b for b in args.cases.split(",") if b]
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        parser.error(f"--cases: unknown backbone(s) {', '.join(unknown)}; known: {', '.join(BACKBONES)}")
    presets = [p for p in (args.presets or "").split(",") if p] or None
    allowed = GPU_PRESETS if device.type == "cuda" else ("cpu",)
    if presets and any(p not in allowed for p in presets):
        parser.error(f"--presets: {args.presets!r}; allowed on this device: {', '.join(allowed)}")
    cases = default_cases(device, backbones, args.resolution, args.batch_size, presets, tuple(args.override))
    batches = 3 if args.batches is None else args.batches
    started = time.perf_counter()
    results = bench_full_size(cases, device, batches, args.warmup, args.work_dir, budget_s=args.budget_s)
    evaluation = [] if args.skip_eval else evaluation_throughput(device)
    name = device_description(device)
    command = "python -m flash_exp.bench " + " ".join(sys.argv[1:] if argv is None else argv)
    run = {"command": command.strip(), **versions(device), "batches": batches, "warmup": args.warmup,
           "seconds": time.perf_counter() - started, "cases": results_json(results), "evaluation": evaluation}
    json_path = args.out.with_suffix(".json")
    record = _read_json(json_path)
    record.setdefault("full_size", {})[name] = run
    report = with_full_size_section(args.out.read_text() if args.out.is_file() else "# Benchmarks\n",
                                    record["full_size"])
    print(render_full_size({name: run}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    return run
