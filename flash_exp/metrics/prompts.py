"""A benchmark's prompt set: ordered prompts, the reference images, and how both were chosen."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flash_exp.config import ConfigError
from flash_exp.metrics.hashing import prompt_set_hash, sha256_json


def normalise_caption(text: str) -> str:
    """Whitespace collapsed to single spaces and stripped (COCO captions carry stray newlines)."""
    return " ".join(text.split())


def read_captions_file(path: Path, count: int) -> list[str]:
    """Every non-empty line of ``path`` (one caption per line), normalised; at least ``count`` of them."""
    lines = [normalise_caption(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
    captions = [line for line in lines if line]
    if len(captions) < count:
        raise ConfigError("num_images", count, f"at most {len(captions)}: the captions file {path} has {len(captions)}")
    return captions


@dataclass
class PromptSet:
    """``prompts``: the benchmark's prompts (draw 0); ``reference_files`` are the real images of the FID
    reference statistics; ``provenance`` records the sources and the selection rule; ``pool``: the
    ordered prompts further draws take theirs from (starting with ``prompts``; empty: ``prompts`` only)."""

    prompts: list[str]
    reference_files: list[Path]
    provenance: dict[str, Any] = field(default_factory=dict)
    pool: list[str] = field(default_factory=list)

    def draw_prompts(self, draws: int) -> list[tuple[int, list[str]]]:
        """``(offset in the pool, prompts)`` of each draw: disjoint slices ``[d*n, (d+1)*n)`` of the pool
        when it holds ``draws * n`` prompts, else the benchmark's prompts for every draw (offset 0)."""
        n, pool = len(self.prompts), self.pool or self.prompts
        if pool[:n] != self.prompts:
            raise ValueError("a prompt pool must start with the benchmark's prompts")
        if len(pool) >= draws * n:
            return [(d * n, pool[d * n:(d + 1) * n]) for d in range(draws)]
        return [(0, self.prompts) for _ in range(draws)]

    @property
    def prompt_hash(self) -> str:
        """sha256 of the ordered prompts."""
        return prompt_set_hash(self.prompts)

    def reference_hash(self) -> str:
        """sha256 of the ordered (file name, size in bytes) pairs of the reference images."""
        return sha256_json([[f.name, f.stat().st_size] for f in self.reference_files])
