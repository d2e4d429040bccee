"""Rebuild the toy world deterministically from a seed (see :mod:`flash_exp.toyworld.build`).

``python -m flash_exp.toyworld [--out DIR] [--seed 0] [--only data,vae,teacher,clip] [--quick] [--threads 1]``

``--out`` defaults to the shipped assets directory; ``--quick`` uses tiny sizes and step counts (tests).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from flash_exp.config import toy_paths
from flash_exp.toyworld.build import FULL_WORLD, QUICK_WORLD, WORLD_STAGES, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=toy_paths.ASSETS, help="output directory (default: shipped assets)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=",".join(WORLD_STAGES),
                        help=f"comma-separated subset of {','.join(WORLD_STAGES)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and step counts (tests)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads per process (default 1: these models are too small to "
                             "gain from more, and a fixed count keeps the floating-point results reproducible)")
    args = parser.parse_args()
    stages = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(WORLD_STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {list(WORLD_STAGES)}")
    start = time.perf_counter()
    build(stages, args.out, QUICK_WORLD if args.quick else FULL_WORLD, args.seed, args.threads)
    print(f"[toyworld] done in {time.perf_counter() - start:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
