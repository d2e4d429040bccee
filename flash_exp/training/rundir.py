"""Run directories that never started: a config refused at validation leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

from flash_exp.training.run_lock import LOCK_FILE

# what Hydra writes into a run directory before the task function runs, and the run's own lock
HYDRA_FILES = (".hydra", "train.log", LOCK_FILE)


def discard_unstarted(run_dir: Path) -> bool:
    """Remove ``run_dir`` when it holds only Hydra's own files and the run lock (then its parents that became empty, up
    to the working directory); a directory with anything else in it (an earlier attempt) is kept.
    Returns whether it was removed."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir() or any(p.name not in HYDRA_FILES for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir)
    stop = Path.cwd().resolve()
    parent = run_dir.parent
    while parent != stop and stop in parent.parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent
    return True
