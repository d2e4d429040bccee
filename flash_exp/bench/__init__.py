"""Speed and memory of the training step, sampling and the evaluation's scoring (``make bench``).

Modules, one job each:

* :mod:`~flash_exp.bench.reference`  the fixed SD1.5-shaped reference model and its training configs
* :mod:`~flash_exp.bench.steps`      one training step (``FlashDistiller.train_step``) and its timing
* :mod:`~flash_exp.bench.naive`      the naive "before" variants the step avoids
* :mod:`~flash_exp.bench.sections`   the training, sampling and evaluation sections
* :mod:`~flash_exp.bench.report`     the Markdown report (and its full-size section)
* :mod:`~flash_exp.bench.architectures`  the paper backbones' real architectures as random-weight pipelines
* :mod:`~flash_exp.bench.full_size`  ``--full-size``: those backbones under each memory preset
* :mod:`~flash_exp.bench.cli`        ``python -m flash_exp.bench``

Public API: :func:`main`, :func:`bench_training`, :func:`bench_sampling`, :func:`bench_evaluation`,
``BATCH`` and ``K`` (the reference batch size and teacher steps).
"""

from flash_exp.bench.cli import main
from flash_exp.bench.reference import BATCH, K
from flash_exp.bench.sections import bench_evaluation, bench_sampling, bench_training

__all__ = ["BATCH", "K", "bench_evaluation", "bench_sampling", "bench_training", "main"]
