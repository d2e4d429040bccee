"""Evaluation of trained runs: sample the student (and the teacher baselines), score, write result JSON.

Modules, one job each:

* :mod:`~flash_exp.evaluation.settings`       the ``conf/evaluate.yaml`` schema, the device, the sampler settings
* :mod:`~flash_exp.evaluation.scoring`        scoring models and caches: prompt sets, FID extractors, CLIP, LPIPS
* :mod:`~flash_exp.evaluation.run_models`     a run's teacher and student identities and pipelines
* :mod:`~flash_exp.evaluation.generate`       resumable, seeded, batched sampling of a prompt set to PNG files
* :mod:`~flash_exp.evaluation.image_files`    PNG writes and the spec that claims an image directory
* :mod:`~flash_exp.evaluation.gallery`        the first images of draw 0, kept beside each result
* :mod:`~flash_exp.evaluation.text_to_image`  a text-to-image run: benchmarks' prompts, teacher results shared
* :mod:`~flash_exp.evaluation.task_runs`      a conditional task's run: held-out conditions, restoration scores
* :mod:`~flash_exp.evaluation.runner`         one run or every run under a directory, and their status files

``python -m flash_exp.evaluate`` is the command line over :func:`evaluate`.
"""

from flash_exp.evaluation.runner import evaluate, score_run
from flash_exp.evaluation.scoring import Scorer
from flash_exp.evaluation.settings import EvaluateConfig, register_configs

__all__ = ["EvaluateConfig", "Scorer", "evaluate", "register_configs", "score_run"]
