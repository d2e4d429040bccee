"""The eval spec: everything that changes an evaluation number, and its sha256.

A spec has two parts. ``protocol``: benchmark, prompt-set hash, image count, evaluation resolution,
resize policy, base seed, FID implementation and feature extractor, reference set, CLIP model and
text prefix. ``sampler``: student or teacher, NFE, guidance, scheduler and generation resolution.
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


SPEC_VERSION = 1
CLIP_SCORE_DEFINITION = "mean cosine similarity of image and text embeddings, in [-1, 1]; not x100, not clamped"


def protocol_spec(benchmark: str, prompt_hash: str, num_images: int, eval_res: int, seed: int,
                  features: dict[str, Any], reference: dict[str, Any], clip: dict[str, Any],
                  photo_prefix: bool) -> dict[str, Any]:
    """The protocol part of a spec (independent of how the images are sampled)."""
    return {
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
