"""The quiet console: known-harmless upstream noise is dropped, everything else still shows."""

from __future__ import annotations

import logging
import warnings

from flash_exp.training.console import LIGHTNING_LOGGERS, quiet_console


def test_known_harmless_warnings_are_dropped_and_others_kept():
    quiet_console()
    with warnings.catch_warnings(record=True) as caught:
        warnings.warn("Found 478 module(s) in eval mode at the start of training.", UserWarning, stacklevel=1)
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("Using ModelCheckpoint with manual optimization and every_n_train_steps, but no "
                      "pre-optimization state was saved.", UserWarning, stacklevel=1)
        warnings.warn("The `srun` command is available on your system but is not used. HINT: If your "
                      "intention is to run Lightning on SLURM, prepend your python command with `srun`",
                      UserWarning, stacklevel=1)
        warnings.warn("something a user must read", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something a user must read"]


def test_lightning_lines_reach_the_console_once():
    import lightning.pytorch  # noqa: F401 (adds Lightning's own stderr handler)

    quiet_console()
    for name in LIGHTNING_LOGGERS:
        assert logging.getLogger(name).handlers == [] and logging.getLogger(name).propagate


def test_the_training_bar_is_drawn_once_per_update():
    """Each update is one draw in a log file: Lightning's own bar draws the count, then the losses."""
    import io

    from lightning.pytorch.callbacks import TQDMProgressBar
    from tqdm import tqdm

    from flash_exp.training.progress import OneDrawProgressBar

    def draws(bar_class) -> int:
        callback, stream = bar_class(refresh_rate=2), io.StringIO()
        callback.train_progress_bar = tqdm(total=8, file=stream, mininterval=0)
        callback.get_metrics = lambda trainer, module: {"loss": 0.5}
        before = stream.getvalue().count("\r")
        for batch_idx in range(8):
            callback.on_train_batch_end(None, None, None, None, batch_idx)
        return stream.getvalue().count("\r") - before

    assert draws(TQDMProgressBar) == 8  # 4 updates (every 2 batches), two draws each
    assert draws(OneDrawProgressBar) == 4
