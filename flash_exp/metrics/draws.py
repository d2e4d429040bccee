"""One benchmark's scores over its draws: each draw's record, the mean of each score, the spread over draws."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from flash_exp.metrics.hashing import prompt_set_hash
from flash_exp.metrics.registry import optional_scores

DRAW_SCORES = ("fid", "clip_score", "kid", "kid_std", "precision", "recall", "density", "coverage")
MEAN_SCORES = ("fid", "clip_score", "kid", "precision", "recall", "density", "coverage")
SPREAD_SCORES = ("fid", "clip_score", "kid")


def draw_record(draw: int, offset: int, prompts: list[str], scores: dict[str, Any]) -> dict[str, Any]:
    """One draw's entry of a result: its :data:`DRAW_SCORES`, the optional metrics' scores it has, and
    which prompts it sampled (``prompt_offset``: the first prompt's index in the benchmark's prompt
    pool; ``prompts_sha256``)."""
    optional = {k: scores[k] for k in optional_scores() if k in scores}
    return {"draw": draw, **{k: scores[k] for k in DRAW_SCORES}, **optional, "prompt_offset": offset,
            "prompts_sha256": prompt_set_hash(prompts)}


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def summarise_draws(draws: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per draw scores -> ``{score: mean over draws}`` for :data:`MEAN_SCORES`, ``fid_std`` and
    ``clip_score_std`` (sample standard deviation over draws, ddof 1; None for one draw),
    ``kid_std`` (draw 0's standard deviation over KID's subsets) and ``kid_draws_std`` (KID's sample
    standard deviation over draws; None for one draw). An optional metric's score gets its mean and
    ``<score>_std`` over draws the same way. A score that is None in some draw (precision and recall
    of a set no larger than ``nearest_k``) is None."""
    if not draws:
        raise ValueError("no draws to summarise")
    out: dict[str, Any] = {k: _mean([d[k] for d in draws]) for k in MEAN_SCORES}
    for key in (k for k in optional_scores() if k in draws[0]):
        out[key] = _mean([d[key] for d in draws])
        values = [d[key] for d in draws]
        out[f"{key}_std"] = (float(np.std(values, ddof=1))
                             if len(draws) > 1 and all(v is not None for v in values) else None)
    for key in SPREAD_SCORES:
        name = "kid_draws_std" if key == "kid" else f"{key}_std"
        out[name] = float(np.std([d[key] for d in draws], ddof=1)) if len(draws) > 1 else None
    out["kid_std"] = float(draws[0]["kid_std"])
    return out
