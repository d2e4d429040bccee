"""The eval spec: everything that changes an evaluation number, and its sha256.

A spec has two parts. ``protocol``: benchmark, prompt-set hash, image count, evaluation resolution,
resize policy, base seed, FID implementation and feature extractor, reference set, CLIP model and
text prefix, the draws (how many, each draw's prompt-set hash), the noise rule, and the settings of
KID and precision/recall/density/coverage. ``sampler``: student or teacher, NFE, guidance, scheduler and generation resolution.
``spec_hash`` covers both; the leaderboard puts results in one table only when their
``protocol_hash`` is equal, and compares numbers of equal ``spec_hash`` side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from flash_exp.metrics.clip_score import PHOTO_PREFIX
from flash_exp.metrics.fid import CLEANFID_MODE
from flash_exp.metrics.hashing import sha256_json
from flash_exp.metrics.images import RESIZE_POLICY
from flash_exp.metrics.noise import KID_SUBSET_RULE, NOISE_RULE

SAMPLERS = ("student", "teacher")


@dataclass(frozen=True)
class SamplerSetting:
    """How images are sampled: ``sampler`` (student LoRA or teacher), ``nfe`` scheduler steps, CFG
    ``guidance`` (0 = no CFG, the student's setting; the teacher's CFG doubles its UNet calls)."""

    sampler: str
    nfe: int
    guidance: float

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler={self.sampler!r}, allowed: {', '.join(SAMPLERS)}")
        if self.nfe <= 0:
            raise ValueError(f"nfe={self.nfe} must be positive")

    @property
    def name(self) -> str:
        return f"{self.sampler}_nfe{self.nfe}"


SPEC_VERSION = 2
CLIP_SCORE_DEFINITION = "mean cosine similarity of image and text embeddings, in [-1, 1]; not x100, not clamped"
DRAW_PROMPTS_RULE = ("draw d takes prompts [d*n, (d+1)*n) of the prompt pool when the pool holds draws*n prompts, "
                     "else every draw takes the first n")


@dataclass(frozen=True)
class ScoreSettings:
    """The settings of the scores beside FID and CLIP: ``draws`` disjoint draws of the benchmark, KID
    over ``kid_subsets`` subsets of ``min(n, M, kid_subset_size)`` features with a polynomial kernel of
    ``kid_degree``, and precision/recall/density/coverage with ``nearest_k`` neighbours."""

    draws: int = 1
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_degree: int = 3
    nearest_k: int = 5

    def describe(self, draw_prompt_hashes: list[str]) -> dict[str, Any]:
        """The spec entries of these settings; ``draw_prompt_hashes``: each draw's prompt-set sha256."""
        return {
            "draws": {"count": self.draws, "prompts": DRAW_PROMPTS_RULE, "prompt_sets_sha256": draw_prompt_hashes,
                      "mean_and_std": "mean over draws; sample standard deviation (ddof 1), null for one draw"},
            "noise": NOISE_RULE,
            "kid": {"kernel": f"(x.y/d + 1)^{self.kid_degree}", "estimator": "unbiased MMD^2 (clean-fid kernel_distance)",
                    "num_subsets": self.kid_subsets, "max_subset_size": self.kid_subset_size,
                    "subsets": KID_SUBSET_RULE, "std": "over the subsets, ddof 0 (torchmetrics)"},
            "prdc": {"nearest_k": self.nearest_k, "distance": "euclidean", "comparison": "strict < (prdc)"},
        }


def protocol_spec(benchmark: str, prompt_hash: str, num_images: int, eval_res: int, seed: int,
                  features: dict[str, Any], reference: dict[str, Any], clip: dict[str, Any],
                  photo_prefix: bool, scores: ScoreSettings | None = None,
                  draw_prompt_hashes: list[str] | None = None, images_per_prompt: int = 1,
                  metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The protocol part of a spec (independent of how the images are sampled); ``draw_prompt_hashes``
    default to ``prompt_hash`` for every draw (draws that differ only in noise). ``images_per_prompt``
    (when above 1) and ``metrics`` (each optional metric's pinned settings, when any) are added as
    keys, so a benchmark without them keeps its hash."""
    scores = scores if scores is not None else ScoreSettings()
    hashes = draw_prompt_hashes if draw_prompt_hashes is not None else [prompt_hash] * scores.draws
    extra: dict[str, Any] = {}
    if images_per_prompt > 1:
        extra["images_per_prompt"] = {"count": images_per_prompt,
                                      "order": "the images of prompt p are files [p*count, (p+1)*count)"}
    if metrics:
        extra["metrics"] = metrics
    return {
        **extra,
        "benchmark": benchmark,
        "prompt_set_sha256": prompt_hash,
        "num_images": num_images,
        "eval_res": eval_res,
        "resize": RESIZE_POLICY,
        "seed": seed,
        "image_format": "png",
        "fid": {"implementation": f"clean-fid=={version('clean-fid')}", "mode": CLEANFID_MODE,
                "features": features, "reference": reference},
        "clip": {**clip, "text_prefix": PHOTO_PREFIX if photo_prefix else "", "score": CLIP_SCORE_DEFINITION},
        **scores.describe(hashes),
    }


def sampler_spec(setting: SamplerSetting, scheduler: dict[str, Any], resolution: int) -> dict[str, Any]:
    """The sampler part of a spec."""
    return {"sampler": setting.sampler, "nfe": setting.nfe, "guidance": setting.guidance,
            "scheduler": scheduler, "resolution": resolution}


def eval_spec(protocol: dict[str, Any], sampler: dict[str, Any]) -> dict[str, Any]:
    return {"version": SPEC_VERSION, "protocol": protocol, "sampler": sampler}


def spec_hash(spec: dict[str, Any]) -> str:
    return sha256_json(spec)


def protocol_hash(spec: dict[str, Any]) -> str:
    return sha256_json({"version": spec["version"], "protocol": spec["protocol"]})
