"""One benchmark's scores over its draws: the mean of each score and the spread of FID and CLIP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

MEAN_SCORES = ("fid", "clip_score", "kid", "precision", "recall", "density", "coverage")
SPREAD_SCORES = ("fid", "clip_score", "kid")


def _mean(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean(values))


def summarise_draws(draws: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per draw scores -> ``{score: mean over draws}`` for :data:`MEAN_SCORES`, ``fid_std`` and
    ``clip_score_std`` (sample standard deviation over draws, ddof 1; None for one draw),
    ``kid_std`` (draw 0's standard deviation over KID's subsets) and ``kid_draws_std`` (KID's sample
    standard deviation over draws; None for one draw). A score that is None in some draw (precision
    and recall of a set no larger than ``nearest_k``) is None."""
    if not draws:
        raise ValueError("no draws to summarise")
    out: dict[str, Any] = {k: _mean([d[k] for d in draws]) for k in MEAN_SCORES}
    for key in SPREAD_SCORES:
        name = "kid_draws_std" if key == "kid" else f"{key}_std"
        out[name] = float(np.std([d[key] for d in draws], ddof=1)) if len(draws) > 1 else None
    out["kid_std"] = float(draws[0]["kid_std"])
    return out
