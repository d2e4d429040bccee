"""The experiment trackers of ``logger.trackers`` (``conf/logger/``) and the sample grids sent to them.

``csv`` writes ``<run>/metrics.csv`` (continued, not replaced, by a resumed or requeued attempt),
``tensorboard`` ``<run>/tensorboard/``, ``wandb`` a Weights & Biases run whose id is the run
directory's name (a resumed run continues it), ``mlflow`` an MLflow run in ``logger.tracking_uri``
(default ``file:<run>/mlruns``). wandb and mlflow are optional packages: the config's validation has
already refused a tracker whose package is missing, so nothing here fails after the model loaded.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from flash_exp.config import LoggerConfig


def rows_before(text: str, step: int) -> str:
    """The CSV ``text`` with only its rows logged before ``step`` (the header kept)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or "step" not in rows[0]:
        return text
    column = rows[0].index("step")
    kept = [r for r in rows[1:] if column < len(r) and r[column] != "" and float(r[column]) < step]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([rows[0], *kept])
    return out.getvalue()


class ContinuedCSVLogger(CSVLogger):
    """A CSVLogger that continues the ``metrics.csv`` of an earlier attempt of the same run (resume,
    requeue) instead of deleting it, as Lightning's writer does when its directory is not empty. Rows
    of steps from ``resume_step`` on are dropped: the resumed run logs them again, so each step is in
    the file once."""

    def __init__(self, *args, resume_step: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is not None:
            return self._experiment
        path = Path(self.log_dir) / "metrics.csv"
        previous = rows_before(path.read_text(), self.resume_step) if path.is_file() else ""
        with warnings.catch_warnings():  # its "previous log files will be deleted" no longer holds
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = super().experiment
        if previous:
            path.write_text(previous)
            # the earlier header first: rows of both attempts share one set of columns
            writer.metrics_keys = next(csv.reader(io.StringIO(previous)), [])
        return writer


def build_loggers(cfg: LoggerConfig, run_dir: Path, run_name: str, resume_step: int = 0) -> list[Logger]:
    """One Lightning logger per entry of ``cfg.trackers``, in that order; a resumed run (from the
    checkpoint of ``resume_step``) continues the csv file from that step."""
    loggers: list[Logger] = []
    for name in cfg.trackers:
        if name == "csv":
            loggers.append(ContinuedCSVLogger(run_dir, name="", version="", resume_step=resume_step))
        elif name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False))
        elif name == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            loggers.append(WandbLogger(save_dir=str(run_dir), project=cfg.project, name=run_name, id=run_dir.name,
                                       resume="allow", offline=cfg.offline))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            uri = cfg.tracking_uri or (Path(run_dir).resolve() / "mlruns").as_uri()
            loggers.append(MLFlowLogger(experiment_name=cfg.project, run_name=run_name, tracking_uri=uri))
    return loggers


def log_grid(loggers: list[Logger], path: Path, step: int) -> None:
    """Send the sample grid PNG at ``path`` to every tracker that takes images (not csv)."""
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            import numpy as np
            from PIL import Image

            pixels = np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image("samples", pixels, global_step=step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key="samples", images=[str(path)], step=step)
        elif isinstance(logger, MLFlowLogger):
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="samples")
