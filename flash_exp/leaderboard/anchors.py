"""Published Flash Diffusion numbers (``eval/published.yaml``): shown apart from the measured rows,
never ranked against them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
PUBLISHED_FILE = REPO / "eval" / "published.yaml"


@dataclass(frozen=True)
class Anchor:
    """A published number: not measured here, protocol unknown."""

    benchmark: str
    model: str
    nfe: int
    fid: float | None
    clip: float | None
    source: str


def load_anchors(path: Path = PUBLISHED_FILE) -> list[Anchor]:
    entries = OmegaConf.to_container(OmegaConf.load(path)) if Path(path).is_file() else []
    return [Anchor(e["benchmark"], e["model"], int(e["nfe"]), e.get("fid"), e.get("clip_score"), e["source"])
            for e in entries or []]
