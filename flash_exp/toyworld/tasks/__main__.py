"""Build the toy conditional teachers: the toy world's inpainting, super-resolution, canny-adapter and
face-swap teachers, trained here on a CPU from the toy teacher.

``python -m flash_exp.toyworld.tasks [--root DIR] [--only inpainting,superres,adapter_canny,faceswap]
[--quick] [--seed 0]``

Needs the toy world (``python -m flash_exp.toyworld``: data, VAE, teacher) under ``--root`` and writes
``<root>/tasks/`` (see :mod:`flash_exp.config.toy_paths`). Every teacher is a self-contained
diffusers directory (its own copy of the toy VAE, text encoder and tokenizer), so it keeps working
with the toy backbone's code path (``backbone=toy task=<task>``):

* ``inpainting``: ``StableDiffusionInpaintPipeline``; the toy UNet with ``conv_in`` widened to 9
  channels (new weights zero, so training starts from the text-to-image teacher) fine-tuned on random
  box / stroke masks (10 % full masks, 10 % empty captions for CFG);
* ``superres``: ``StableDiffusionUpscalePipeline``; 7 input channels and a 1000-class noise-level
  embedding (zero-initialised), fine-tuned on x4-downscaled images at noise levels 0..100;
* ``adapter_canny``: ``StableDiffusionAdapterPipeline``: the toy teacher unchanged (frozen) and a
  diffusers ``T2IAdapter`` trained on Canny edges (``adapter/``);
* ``faceswap``: synthetic faces (``faces/``, :mod:`flash_exp.toyworld.faces`) and an inpainting UNet
  (from the inpainting teacher) trained jointly with a tiny CLIP image encoder (``image_encoder/``) and
  its identity-token projection (``image_projection/``).

``tasks.json`` records each teacher's build time, steps, and its PSNR / SSIM (and condition metrics)
on held-out conditions at the toy sampling budget.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flash_exp.config import toy_paths
from flash_exp.toyworld.tasks.builders import build
from flash_exp.toyworld.tasks.settings import TASK_STAGES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=toy_paths.ASSETS, help="the toy world (default: shipped assets)")
    parser.add_argument("--only", default=",".join(TASK_STAGES), help=f"comma-separated subset of {','.join(TASK_STAGES)}")
    parser.add_argument("--quick", action="store_true", help="tiny step counts (tests)")
    parser.add_argument("--no-eval", action="store_true", help="skip the held-out PSNR / SSIM of each teacher")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(TASK_STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {list(TASK_STAGES)}")
    total = time.perf_counter()
    build(args.root, stages, args.quick, args.seed, evaluate=not args.no_eval)
    print(f"[toyworld.tasks] done in {time.perf_counter() - total:.1f} s -> {args.root / 'tasks'}")


if __name__ == "__main__":
    main()
