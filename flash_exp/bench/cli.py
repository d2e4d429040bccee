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
import tempfile
from pathlib import Path

import torch

from flash_exp.bench.reference import build_reference_pipeline
from flash_exp.bench.report import device_description, render
from flash_exp.bench.sections import bench_evaluation, bench_sampling, bench_training

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> dict:
    """Run the bench, print the report, write it to ``--out`` and its numbers beside it as JSON."""
    parser = argparse.ArgumentParser(prog="python -m flash_exp.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="timed batches per configuration")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--skip-eval", action="store_true", help="skip the evaluation throughput section")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          (args.device if args.device != "auto" else "cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        pretrained = build_reference_pipeline(Path(tmp) / "reference")
        training = bench_training(pretrained, device, args.batches, args.warmup)
        sampling = bench_sampling(pretrained, device, max(1, args.batches // 2))
    evaluation = [] if args.skip_eval else bench_evaluation(max(1, args.batches))
    name = device_description(device)
    report = render(name, training, sampling, evaluation, args.batches, args.warmup)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    result = {"device": name, "training": [r.__dict__ for r in training], "sampling": sampling,
              "evaluation": evaluation, "batches": args.batches, "warmup": args.warmup}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    return result
