"""``python -m flash_exp.prefetch``: fetch ahead of time everything a run and its evaluation load.

    python -m flash_exp.prefetch --dry-run backbone=sdxl task=inpainting eval=paper   # only list
    python -m flash_exp.prefetch --cache /scratch/flash-cache backbone=sdxl task=inpainting eval=paper
    source /scratch/flash-cache/offline.env        # then train and evaluate need no network

The arguments after the options are the overrides of ``python -m flash_exp.train`` (its ``eval`` group
names the benchmarks that the evaluation scores). Listed, with their size where known (what is
already in the cache; VGG16's published size): the teacher (a hub pipeline), the task's frozen models
(the T2I-Adapter, a face-swap identity encoder held elsewhere), the VGG16 ImageNet weights of LPIPS
(the ``lpips`` distillation loss; the restoration scores of a task with ground truth), clean-fid's
Inception weights (FID) and the open_clip weights of each benchmark's CLIP model. Each is fetched by
its library's own function into one cache folder: ``huggingface/hub`` (``DiffusionPipeline.download``,
``snapshot_download``, ``open_clip.download_pretrained``), ``cleanfid/`` (clean-fid's
``check_download_url``) and ``torch/`` (torchvision's ``VGG16_Weights.get_state_dict``). Then
``offline.env`` in that folder sets ``HF_HUB_OFFLINE=1`` and the paths the runs read (``HF_HUB_CACHE``,
``TORCH_HOME``, ``FLASH_EXP_INCEPTION``, ``FLASH_EXP_CLIP_WEIGHTS``); copy the folder to the cluster and
``source`` it there (set ``FLASH_EXP_CACHE`` first when the folder lives at another path).

COCO images are not fetched here: ``python -m flash_exp.data.coco check`` says what is missing.
A local directory (``backbone.pretrained=DIR``, the toy world) is listed as local; nothing is fetched.
"""

from flash_exp.prefetch.listing import main, plan, prefetch

__all__ = ["main", "plan", "prefetch"]
