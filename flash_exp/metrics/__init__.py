"""Evaluation metrics and benchmarks: FID (and KID) through clean-fid, CLIP score through open_clip, PSNR / SSIM /
LPIPS through torchmetrics.

Modules, one job each:

* :mod:`~flash_exp.metrics.hashing`     sha256 of prompts, JSON specs and (memoised) weight files
* :mod:`~flash_exp.metrics.images`      the crop-and-resize policy, atomic PNG writes, image file names
* :mod:`~flash_exp.metrics.features`    FID feature extractors (Inception file, a CLIP image tower)
* :mod:`~flash_exp.metrics.fid`         features through clean-fid, Gaussian statistics, cached references
* :mod:`~flash_exp.metrics.kid`         KID: unbiased polynomial-kernel MMD² over seeded subsets, and its std
* :mod:`~flash_exp.metrics.precision_recall`  precision, recall, density, coverage of generated vs reference features
* :mod:`~flash_exp.metrics.noise`       the evaluation's seed rules: each image's initial noise, KID's subsets
* :mod:`~flash_exp.metrics.draws`       a benchmark's scores over draws: means and standard deviations
* :mod:`~flash_exp.metrics.clip_score`  open_clip models from local files and the cosine CLIP score
* :mod:`~flash_exp.metrics.preference`  ImageReward, PickScore, HPSv2.1, aesthetic: per-image preference scores
* :mod:`~flash_exp.metrics.toy_clip`    the shipped toy CLIP, registered with open_clip and loaded
* :mod:`~flash_exp.metrics.prompts`     a prompt set: ordered prompts, reference images, provenance
* :mod:`~flash_exp.metrics.coco`        COCO caption annotations -> a deterministic prompt set
* :mod:`~flash_exp.metrics.toy`         the toy world's held-out shards -> prompts and reference images
* :mod:`~flash_exp.metrics.benchmarks`  benchmark definitions (``eval/benchmarks/*.yaml``) and their prompt sets
* :mod:`~flash_exp.metrics.spec`        the eval spec (sampler settings included): what changes a number, and its hash
* :mod:`~flash_exp.metrics.results`     result and run-status JSON files
* :mod:`~flash_exp.metrics.restoration` PSNR, SSIM, LPIPS and the condition scores of the tasks
* :mod:`~flash_exp.metrics.statistics`  t intervals over training seeds, paired differences, verdicts (no torch)
"""
