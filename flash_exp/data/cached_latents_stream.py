"""The latent-cache stream: training batches read from the shards that ``python -m
flash_exp.data.cache_latents`` writes, so training skips both encoders.

A cached sample holds ``pth`` (the VAE latents and the text embeddings of one sample, packed by
:func:`pack_cached`) and ``json`` (caption, aesthetic score and the backbone that encoded them).
:class:`CachedLatentStream` reads them through the stream of
:class:`~flash_exp.data.webdataset.CaptionedImageStream` (same shuffling, counters and resume).
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch

from flash_exp.data.webdataset import CaptionedImageStream


def pack_cached(latents: torch.Tensor, condition: dict[str, Any]) -> bytes:
    """The ``pth`` entry of a cached sample: latents (C, h, w) and the condition's kwargs of one sample."""
    buf = io.BytesIO()
    torch.save({"latents": latents, "condition": condition}, buf)
    return buf.getvalue()


def stack_tree(values: list[Any]) -> Any:
    """Per-sample tensors, also nested in dicts, stacked along a new leading batch dimension."""
    if isinstance(values[0], dict):
        return {k: stack_tree([v[k] for v in values]) for k in values[0]}
    return torch.stack(values)


class CachedLatentStream(CaptionedImageStream):
    """The stream of :class:`CaptionedImageStream` over latent-cache shards: batches of ``latents``
    (B, C, h, w), ``condition`` (the denoiser's condition kwargs, batched) and ``captions``.

    ``encoded_by`` ({family, resolution}) must match what the cache records, else reading raises.
    """

    def __init__(self, shards: list[str], encoded_by: dict[str, Any], batch_size: int, **kwargs: Any):
        super().__init__(shards, resolution=int(encoded_by["resolution"]), batch_size=batch_size, **kwargs)
        self.encoded_by = dict(encoded_by)

    def _decode(self, sample: dict) -> dict | None:
        key = sample.get("__key__", "?")
        if "pth" not in sample or "json" not in sample:
            raise ValueError(f"sample {key} is not a latent-cache sample (pth + json): data.cached=true reads "
                             "the shards written by python -m flash_exp.data.cache_latents")
        meta = json.loads(sample["json"])
        cached_by = {k: meta["encoded_by"].get(k) for k in self.encoded_by}
        if cached_by != self.encoded_by:
            raise ValueError(f"sample {key} was cached with {cached_by}, this run needs {self.encoded_by} "
                             "(backbone.family, backbone.resolution): cache the shards again")
        if self._below_threshold(meta.get("aesthetic_score")):
            self._reject("under the aesthetic threshold", key, filtered=True)
            return None
        payload = torch.load(io.BytesIO(sample["pth"]), map_location="cpu", weights_only=True)
        return {"latents": payload["latents"], "condition": payload["condition"], "caption": meta["caption"]}

    def collate(self, items: list[dict]) -> dict:
        return {"latents": torch.stack([b["latents"] for b in items]),
                "condition": stack_tree([b["condition"] for b in items]),
                "captions": [b["caption"] for b in items]}
