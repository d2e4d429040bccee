"""The toy conditional teachers (inpainting, super-resolution, canny adapter, face swap), trained on a
CPU from the toy teacher; ``python -m flash_exp.toyworld.tasks`` builds them.

Modules, one job each:

* :mod:`~flash_exp.toyworld.tasks.settings`            stages, step counts (full, quick), toy canny thresholds
* :mod:`~flash_exp.toyworld.tasks.finetune`            the fine-tuning kit: frozen base, text table, loss, fit
* :mod:`~flash_exp.toyworld.tasks.inpainting_teacher`  the inpainting teacher
* :mod:`~flash_exp.toyworld.tasks.superres_teacher`    the x4 super-resolution teacher
* :mod:`~flash_exp.toyworld.tasks.adapter_teacher`     the canny T2I-Adapter teacher
* :mod:`~flash_exp.toyworld.tasks.face_data`           the synthetic face shards and their masks
* :mod:`~flash_exp.toyworld.tasks.faceswap_teacher`    the face-swap teacher and its identity encoder
* :mod:`~flash_exp.toyworld.tasks.evaluation`          a built teacher on held-out conditions
* :mod:`~flash_exp.toyworld.tasks.builders`            build the chosen stages in order, record ``tasks.json``

Public API: :func:`build`, :data:`TASK_STAGES`, :data:`FULL_TASKS`, :data:`QUICK_TASKS`.
"""

from flash_exp.toyworld.tasks.builders import build
from flash_exp.toyworld.tasks.settings import FULL_TASKS, QUICK_TASKS, TASK_STAGES

__all__ = ["FULL_TASKS", "QUICK_TASKS", "TASK_STAGES", "build"]
