"""The paper's data pipeline: webdataset shards of ``jpg`` + ``json{caption, aesthetic_score}``.

Samples without an image or a caption, and images that fail to decode, are skipped and counted; each
batch carries its stream's cumulative count of skips (``skipped``: every encounter, a bad sample once
per pass; with the stream id ``stream``) and the names of the samples first skipped since its previous
batch (``skipped_new``), so the trainer can log the totals, skipped samples and distinct skipped files,
even when the pipeline runs in several DataLoader workers. Samples under the aesthetic threshold are filtered (``filtered``).

Shard URLs that run a shell command (``pipe:CMD``) are refused unless ``allow_command_urls``.

The stream never loops without progress: a whole pass over the shards that yields no usable sample,
or ``max_consecutive_rejects`` rejected candidates in a row, raises :class:`DataStreamError` naming
how many candidates were rejected, why, and the setting behind each reason. Each reason is logged
for its first few samples only, so a bad setting cannot fill the disk with warnings.

Shard-level problems are counted apart from sample-level skips: a shard that cannot be opened
(``shards_unreadable``) and a truncated shard (``shards_truncated``: a local ``.tar`` whose headers end
before its end-of-archive marker, which tar readers take silently for the end, or a compressed shard
whose stream ends early). The intact samples of a truncated shard are still used.

The stream is deterministic from (seed, rank, worker): a resumed run skips the batches it already
consumed and sees the same batches an uninterrupted run would.

:class:`flash_exp.data.cached_latents_stream.CachedLatentStream` reads the shards that ``python -m
flash_exp.data.cache_latents`` writes through the same stream, so training skips both encoders.

A task's per-sample hook (``transform``, a :class:`flash_exp.tasks.base.SampleTransform`) reads its
fields from the raw sample (``read``: e.g. a reference image; a sample it rejects is skipped and
counted) and adds its random inputs (masks, degradations, edge maps) with a generator seeded by
(seed, rank, worker role, position of the sample in its stream): the same sample position always
gets the same inputs, so resume stays exact, and samples of skipped batches cost no task work.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms import functional as TF
from webdataset.shardlists import expand_urls

from flash_exp.config import refuse_command_urls
from flash_exp.data.stream_counters import (
    LOGGED_PER_REASON,
    REJECTION_SETTINGS,
    TRUNCATION_ERRORS,
    DataStreamError,
    StreamCounters,
    tar_truncation,
    url_of_error,
)

log = logging.getLogger(__name__)




def image_to_tensor(image: Image.Image, resolution: int, crop_size: int | None = None) -> torch.Tensor:
    """Centre crop (to ``crop_size``, default the shorter side), resize to ``resolution``; (3, R, R) in [-1, 1]."""
    image = image.convert("RGB")
    side = min(image.size) if crop_size is None else min(crop_size, *image.size)
    image = TF.center_crop(image, [side, side])
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return TF.to_tensor(image) * 2.0 - 1.0


def sample_name(sample: dict) -> str:
    """``<shard url>:<key>`` of a raw webdataset sample (the key alone for a sample read from a folder)."""
    key = sample.get("__key__", "?")
    return f"{sample['__url__']}:{key}" if sample.get("__url__") else key


class CaptionedImageStream(IterableDataset):
    """An endless, batched stream of (pixels (B, 3, R, R) in [-1, 1], captions) from webdataset shards."""

    def __init__(
        self,
        shards: list[str],
        resolution: int,
        batch_size: int,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        min_aesthetic_score: float | None = None,
        image_keys: str = "jpg;png;jpeg;webp",
        caption_key: str = "caption",
        crop_size: int | None = None,
        resampled: bool = False,
        rank: int = 0,
        world_size: int = 1,
        transform=None,
        max_consecutive_rejects: int = 10_000,
        allow_command_urls: bool = False,
    ):
        super().__init__()
        if not shards:
            raise ValueError("data.shards is empty: name at least one webdataset shard")
        # brace patterns such as "/data/laion/{00000..01023}.tar" name one shard per expansion
        self.shards = [url for pattern in shards for url in expand_urls(pattern)]
        refuse_command_urls("data.shards", self.shards, allow_command_urls)
        self.resolution = resolution
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.min_aesthetic_score = min_aesthetic_score
        self.image_keys = image_keys.split(";")
        self.caption_key = caption_key
        self.crop_size = crop_size
        self.resampled = resampled
        self.rank, self.world_size = rank, world_size
        self.transform = transform  # the task's SampleTransform, or None (text to image)
        self.max_consecutive_rejects = max_consecutive_rejects
        self.start_batch = 0  # batches already consumed (all workers together), set on resume
        self.counters = StreamCounters()
        self._checked: dict[tuple[str, int, int], str | None] = {}  # tar_truncation per (url, size, mtime)

    # ------------------------------------------------------------------ sample level
    def _count_error(self, exn: Exception) -> bool:
        if isinstance(exn, TRUNCATION_ERRORS):
            detail = str(exn.args[0]) if exn.args else type(exn).__name__
            self._shard_problem(self.counters.truncated_shards, "truncated", url_of_error(exn), detail)
        elif isinstance(exn, OSError):
            self._shard_problem(self.counters.unreadable_shards, "unreadable", url_of_error(exn), str(exn))
        else:
            self._reject("unreadable shard entry", f"{url_of_error(exn)}:?", str(exn))
        return True

    def _shard_problem(self, seen: set[str], what: str, url: str, detail: str) -> None:
        """Count a shard-level problem once per shard, with one warning."""
        if url in seen:
            return
        seen.add(url)
        log.warning("shard %s is %s (%s): its samples past that point are lost; counted in data/shards_%s",
                    url, what, detail, what)

    def _check_shards(self, urls: list[str]) -> None:
        """Count the local ``.tar`` shards among ``urls`` that are truncated (checked once per file version)."""
        for url in urls:
            path = Path(url.removeprefix("file:"))
            if not url.endswith(".tar") or not path.is_file():
                continue
            stat = path.stat()
            key = (url, stat.st_size, stat.st_mtime_ns)
            if key not in self._checked:
                self._checked[key] = tar_truncation(url)
            if self._checked[key] is not None:
                self._shard_problem(self.counters.truncated_shards, "truncated", url, self._checked[key])

    def _raw_samples(self, urls: list[str]) -> Iterator[dict]:
        """The raw samples of ``urls`` in order, shard problems counted: webdataset dicts (``__key__`` and
        one entry per extension). A subclass reads another source here
        (:class:`flash_exp.data.folder.FolderImageStream`)."""
        self._check_shards(urls)
        return wds.tarfile_to_samples(handler=self._count_error)(iter({"url": u} for u in urls))

    def _reject(self, reason: str, key: str, detail: str = "", filtered: bool = False) -> None:
        """Count one rejected candidate (``filtered`` or ``skipped``; ``key`` names the sample: its shard
        and key, or its file), log the first few of each reason, and stop the stream once
        ``max_consecutive_rejects`` candidates in a row were rejected."""
        c = self.counters
        if filtered:
            c.filtered += 1
        else:
            c.count_skipped(key)
        c.reasons[reason] += 1
        c.consecutive += 1
        if c.reasons[reason] <= LOGGED_PER_REASON and not filtered:
            more = " (further samples with this reason are counted, not logged)" \
                if c.reasons[reason] == LOGGED_PER_REASON else ""
            log.warning("skipping sample %s: %s%s%s", key, reason, f" ({detail})" if detail else "", more)
        if c.consecutive >= self.max_consecutive_rejects:
            raise DataStreamError(self.rejection_report(
                f"{c.consecutive} candidate samples in a row were rejected "
                f"(data.max_consecutive_rejects={self.max_consecutive_rejects})"))

    def _accept(self) -> None:
        self.counters.consecutive = 0

    def rejection_report(self, what: str) -> str:
        """``what``, then the rejections so far by reason, each with the setting behind it."""
        reasons = "; ".join(f"{n} {reason} ({REJECTION_SETTINGS.get(reason, 'data')})"
                            for reason, n in self.counters.reasons.most_common()) or "none"
        return (f"the data stream stopped: {what}. Rejected so far: {reasons}. Settings: "
                f"data.image_key={';'.join(self.image_keys)!r}, data.caption_key={self.caption_key!r}, "
                f"data.min_aesthetic_score={self.min_aesthetic_score}, data.crop_size={self.crop_size}, "
                f"data.shards={self.shards[:3]}{'...' if len(self.shards) > 3 else ''}")

    def _decode(self, sample: dict) -> dict | None:
        """A training sample {pixels, caption, aesthetic_score}, or None (counted) when it cannot be used."""
        key = sample_name(sample)
        image_bytes = next((sample[k] for k in self.image_keys if k in sample), None)
        meta_bytes = sample.get("json")
        try:
            meta = json.loads(meta_bytes) if meta_bytes is not None else {}
        except (json.JSONDecodeError, UnicodeDecodeError):
            meta = {}
        caption = meta.get(self.caption_key) or (sample.get("txt", b"").decode("utf-8", "replace") or None)
        if image_bytes is None and "pth" in sample:
            raise ValueError(f"sample {key} holds cached latents (.pth), not an image: set data.cached=true")
        if image_bytes is None or not caption:
            self._reject("missing image" if image_bytes is None else "missing caption", key)
            return None
        score = meta.get("aesthetic_score")
        if self._below_threshold(score):
            self._reject("under the aesthetic threshold", key, filtered=True)
            return None
        try:
            with Image.open(io.BytesIO(image_bytes)) as image:
                pixels = image_to_tensor(image, self.resolution, self.crop_size)
        except Exception as exn:  # PIL raises many types for corrupt files
            self._reject("undecodable image", key, str(exn))
            return None
        item = {"pixels": pixels, "caption": caption, "aesthetic_score": score}
        if self.transform is not None:
            extra = self.transform.read(sample, meta)
            if extra is None:
                self._reject("lacks what the task needs", key)
                return None
            item.update(extra)
        return item

    def _below_threshold(self, score: float | None) -> bool:
        return self.min_aesthetic_score is not None and score is not None and score < self.min_aesthetic_score

    def task_generator(self, role: int, num_workers: int, position: int) -> torch.Generator:
        """The generator of the task inputs of the sample at ``position`` in the stream of ``role``."""
        digest = hashlib.sha256(f"{self.seed}-{self.rank}-{role}/{num_workers}-{position}".encode()).digest()
        return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))

    def collate(self, items: list[dict]) -> dict:
        """One batch: ``pixels`` (B, 3, R, R), ``captions`` and the task's per-sample inputs, each
        stacked under its own key."""
        out: dict = {"pixels": torch.stack([b["pixels"] for b in items]), "captions": [b["caption"] for b in items]}
        for key in items[0]:
            if key not in ("pixels", "caption", "aesthetic_score"):
                values = [item[key] for item in items]
                out[key] = torch.stack(values) if torch.is_tensor(values[0]) else values
        return out

    def one_pass(self) -> Iterator[dict]:
        """Every usable sample of the shards once, in shard order, unshuffled: ``_decode``'s dict plus
        ``key`` (the sample's ``__key__``), with the task's inputs drawn by :meth:`task_generator`
        (role 0 of 1) at the sample's position."""
        raw = self._raw_samples(self.shards)
        position = 0
        for sample in raw:
            item = self._decode(sample)
            if item is None:
                continue
            self._accept()
            if self.transform is not None:
                item = self.transform(item, self.task_generator(0, 1, position))
            position += 1
            yield {"key": sample["__key__"], **item}

    # ------------------------------------------------------------------ stream
    def _worker(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def _pass_urls(self, epoch: int, rng: random.Random, worker: int, num_workers: int) -> list[str]:
        """The shards this worker reads in pass ``epoch``."""
        if self.resampled:
            return [rng.choice(self.shards) for _ in range(len(self.shards))]
        urls = list(self.shards)
        random.Random(f"{self.seed}-epoch{epoch}").shuffle(urls)
        urls = urls[self.rank :: self.world_size] or urls
        return urls[worker::num_workers] or urls

    def _samples(self, worker: int, num_workers: int) -> Iterator[dict]:
        """The usable samples (``_decode``'s dicts) of this worker's endless, shuffled stream; raises
        :class:`DataStreamError` after a whole pass without one."""
        stream_id = (self.rank * num_workers + worker) if self.world_size > 1 or num_workers > 1 else 0
        rng = random.Random(f"{self.seed}-{stream_id}")
        epoch = 0
        while True:
            urls = self._pass_urls(epoch, rng, worker, num_workers)
            raw = self._raw_samples(urls)
            count = usable = 0
            for sample in wds.shuffle(self.shuffle_buffer, max(1, self.shuffle_buffer // 10), rng=rng)(raw):
                count += 1
                item = self._decode(sample)
                if item is not None:
                    self._accept()
                    usable += 1
                    yield item
            if count == 0:
                raise FileNotFoundError(f"no readable sample in the shards {urls[:3]}... (data.shards)")
            if usable == 0:
                raise DataStreamError(self.rejection_report(
                    f"a whole pass over {len(urls)} shard(s) gave no usable sample ({count} candidates)"))
            epoch += 1

    def __iter__(self) -> Iterator[dict]:
        worker, num_workers = self._worker()
        # DataLoader takes batch i from worker i % num_workers, starting again at worker 0 after a
        # restart; worker w therefore continues the stream of role (w + start) % num_workers.
        role = (worker + self.start_batch) % num_workers
        skip = max(0, (self.start_batch - role + num_workers - 1) // num_workers)
        batch: list[dict] = []
        position = 0  # usable samples so far in this stream (the task generator's index)
        for item in self._samples(role, num_workers):
            batch.append(item)
            position += 1
            if len(batch) == self.batch_size:
                if skip > 0:
                    skip -= 1
                else:
                    if self.transform is not None:
                        first = position - len(batch)
                        batch = [self.transform(b, self.task_generator(role, num_workers, first + i))
                                 for i, b in enumerate(batch)]
                    yield {
                        **self.collate(batch),
                        "stream": torch.tensor(role),
                        **self.counters.batch_fields(),
                    }
                batch = []
