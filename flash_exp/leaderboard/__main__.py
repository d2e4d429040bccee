"""``python -m flash_exp.leaderboard``: every evaluation result -> ``eval/leaderboard.md`` and ``.html``.

    python -m flash_exp.leaderboard [--runs-dir runs] [--out-dir eval]

One table per benchmark *protocol* (equal ``protocol_hash``: same prompts, image count, resolution,
resize, feature extractor, reference set, CLIP model, seed); results of another protocol get their
own table. Inside a table each row is one configuration at one (sampler, NFE, guidance) setting: runs
that differ only in the training seed are one row (mean, 95 % Student t interval over seeds, n), and
its rank is among the rows of equal ``spec_hash`` only. A "Design choices" table on top pairs each
sweep's values with the paper's choice (the experiment's ``reference``) seed by seed. Teacher baselines shared by several runs appear once.
The published Flash Diffusion numbers (``eval/published.yaml``) are shown in their own "published
anchors" table and as labelled stars on the plots, never as measured rows. The HTML page is
self-contained: FID-vs-NFE curves per table and, for the jobs of one sweep, one panel per swept
override (like the paper's Figure 5) with error bars, and the evaluation's first images of each
configuration, inlined as base64 PNGs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from flash_exp.leaderboard.write import write_leaderboard


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path(os.environ.get("FLASH_EXP_RUNS", "runs")),
                        help="where the runs are (default: $FLASH_EXP_RUNS or runs)")
    parser.add_argument("--out-dir", type=Path, default=Path("eval"), help="where to write the leaderboard")
    args = parser.parse_args(argv)
    for path in write_leaderboard(args.runs_dir, args.out_dir):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
