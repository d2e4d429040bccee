"""The toy benchmark's prompt set: the toy world's held-out shards (jpg + json{caption}).

Prompts are the captions of the first ``num_images`` held-out samples in shard order (further draws
take the next ``num_images`` captions while the split lasts); the reference
images are all held-out images, written once (their JPEG bytes as stored) under
``<cache_dir>/toy_reference/<hash of the shards>/`` so clean-fid can read them as files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from flash_exp.config import ConfigError, toy_paths
from flash_exp.files import write_bytes_atomic, write_text_atomic
from flash_exp.metrics.hashing import file_sha256, sha256_json
from flash_exp.metrics.prompts import PromptSet, normalise_caption

REFERENCE_DIR = "toy_reference"
DONE_FILE = "captions.json"


def _extract(shards: Sequence[str], directory: Path) -> list[str]:
    """Write every sample's JPEG to ``directory/<index>.jpg``; returns the captions in order."""
    import webdataset as wds

    directory.mkdir(parents=True, exist_ok=True)
    captions = []
    for index, sample in enumerate(wds.WebDataset(list(shards), shardshuffle=False)):
        target = directory / f"{index:06d}.jpg"
        write_bytes_atomic(target, sample["jpg"])
        captions.append(normalise_caption(json.loads(sample["json"])["caption"]))
    write_text_atomic(directory / DONE_FILE, json.dumps(captions))  # written last: marks the extraction complete
    return captions


def toy_prompt_set(num_images: int, cache_dir: Path, shards: Sequence[str] | None = None) -> PromptSet:
    """Prompts and reference images of the toy benchmark; ``shards`` default to the shipped held-out ones."""
    if shards is None:
        shards = toy_paths.heldout_shards()
    digest = sha256_json([file_sha256(Path(s)) for s in shards])
    directory = Path(cache_dir) / REFERENCE_DIR / digest[:16]
    done = directory / DONE_FILE
    captions = json.loads(done.read_text()) if done.is_file() else _extract(shards, directory)
    if num_images > len(captions):
        raise ConfigError("toy.num_images", num_images, f"at most {len(captions)}, the size of the held-out split "
                          f"(set +eval.options.toy.num_images={len(captions)})")
    reference = [directory / f"{i:06d}.jpg" for i in range(len(captions))]
    provenance = {"shards": [Path(s).name for s in shards], "shards_sha256": digest, "reference": "all"}
    return PromptSet(captions[:num_images], reference, provenance, pool=list(captions))
