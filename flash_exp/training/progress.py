"""The training progress bar, drawn once per update."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class OneDrawProgressBar(TQDMProgressBar):
    """Lightning's training bar drawn once per update. Lightning draws it twice (the new count, then the
    losses): one line on a terminal, but two in a log file (a SLURM job's, a sweep job's)."""

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        bar, n = self.train_progress_bar, batch_idx + 1
        if bar is None or bar.disable or not self._should_update(n, bar.total):
            return
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.n = n
        bar.refresh()
