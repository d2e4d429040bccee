"""``python -m flash_exp.evaluate``: sample a run's student (and teacher baselines), score, write JSON.

    python -m flash_exp.evaluate run_dir=runs/toy-t2i/<timestamp>                 # the toy benchmark
    python -m flash_exp.evaluate run_dir=<run> eval=coco2017_5k coco_root=/data/coco
    python -m flash_exp.evaluate runs_dir=runs eval=paper                         # every run under runs/
    python -m flash_exp.evaluate run_dir=<run> eval=coco2017_5k +eval.options.coco2017_5k.num_images=500

For each benchmark of ``eval.benchmarks`` and each sampler setting (the student at ``student_nfe``
without CFG; the teacher at ``teacher_nfe`` and at its full budget ``teacher_sampling.steps``, both
with ``teacher_sampling.guidance``) it writes ``<run>/eval/<benchmark>/<sampler>_nfe<N>.json``.
A result whose spec hash and model are unchanged is kept; generation resumes where it stopped.
Teacher baselines do not depend on the run: they are computed once per teacher under ``cache_dir``.
The work is done by :mod:`flash_exp.evaluation`; this module parses the command line.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from flash_exp.backbones.lora_files import LoraLoadError
from flash_exp.config import ConfigError
from flash_exp.evaluation import EvaluateConfig, evaluate, register_configs
from flash_exp.metrics.registry import MetricUnavailable

register_configs()


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        settings: EvaluateConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        code = evaluate(settings)
    except (ConfigError, FileNotFoundError, LoraLoadError, MetricUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    from flash_exp.config import exit_on_config_error

    exit_on_config_error(sys.argv[1:], "evaluate")
    main()
