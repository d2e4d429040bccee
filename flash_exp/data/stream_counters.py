"""What a data stream counts and when it gives up: rejected samples by reason, broken shards.

A candidate sample is rejected for one of the reasons of :data:`REJECTION_SETTINGS` (each named with the
setting behind it); a shard is counted once when it cannot be opened or is truncated (:func:`tar_truncation`
reads a local ``.tar``'s headers, :data:`TRUNCATION_ERRORS` are what a reader raises at a cut-short shard).
:class:`StreamCounters` holds the cumulative counts every batch carries; :class:`DataStreamError` stops a
stream that cannot make progress. Used by :class:`flash_exp.data.webdataset.CaptionedImageStream`.
"""

from __future__ import annotations

import gzip
import tarfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

# why a candidate sample was rejected -> the setting (or input) to look at
REJECTION_SETTINGS = {
    "unreadable shard entry": "data.shards",
    "missing image": "data.image_key",
    "missing caption": "data.caption_key",
    "undecodable image": "data.crop_size or the image bytes",
    "under the aesthetic threshold": "data.min_aesthetic_score",
    "lacks what the task needs": "task",
}
LOGGED_PER_REASON = 5  # warnings per rejection reason; the rest are only counted


class DataStreamError(RuntimeError):
    """The data stream cannot make progress: every candidate sample is rejected."""


TRUNCATION_ERRORS = (tarfile.ReadError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclass
class StreamCounters:
    skipped: int = 0  # sample level, each encounter (every pass): unreadable entries, undecodable images, ...
    filtered: int = 0  # sample level: under the aesthetic threshold
    skipped_names: set[str] = field(default_factory=set)  # the distinct skipped samples (shard:key, or file)
    unreported: list[str] = field(default_factory=list)  # names first skipped since the last batch
    consecutive: int = 0  # candidates rejected since the last usable one
    reasons: Counter = field(default_factory=Counter)  # rejections per reason (see REJECTION_SETTINGS)
    truncated_shards: set[str] = field(default_factory=set)  # shard level: cut short
    unreadable_shards: set[str] = field(default_factory=set)  # shard level: could not be opened

    def count_skipped(self, name: str) -> None:
        """One skipped sample; ``name`` (its shard and key, or its file) tells repeated encounters apart."""
        self.skipped += 1
        if name not in self.skipped_names:
            self.skipped_names.add(name)
            self.unreported.append(name)

    def batch_fields(self) -> dict[str, torch.Tensor | list[str]]:
        """The cumulative counts every batch carries, and ``skipped_new``: the names of the samples first
        skipped since the previous call (so the trainer counts distinct skipped samples over every
        stream, a sample that two workers skip once)."""
        new, self.unreported = self.unreported, []
        return {"skipped": torch.tensor(self.skipped), "filtered": torch.tensor(self.filtered),
                "shards_truncated": torch.tensor(len(self.truncated_shards)),
                "shards_unreadable": torch.tensor(len(self.unreadable_shards)), "skipped_new": new}


def tar_truncation(url: str) -> str | None:
    """Why the local uncompressed ``.tar`` at ``url`` is truncated, or None (complete, compressed, remote).

    Only the headers are read (random access): the archive is truncated when its last member's data runs
    past the end of the file, or when no zero end-of-archive block follows it."""
    path = Path(url.removeprefix("file:"))
    if not url.endswith(".tar") or not path.is_file():
        return None
    size = path.stat().st_size
    end = 0
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                end = member.offset_data + -(-member.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    except tarfile.ReadError as err:
        return f"unreadable tar headers ({err})"
    if end > size:
        return f"its last member needs {end} bytes, the file holds {size}"
    with open(path, "rb") as f:
        f.seek(end)
        tail = f.read(tarfile.BLOCKSIZE)
    if len(tail) < tarfile.BLOCKSIZE or any(tail):
        return f"no end-of-archive block after byte {end} of {size}"
    return None


def url_of_error(exn: Exception) -> str:
    """The shard URL webdataset appends to the arguments of the errors it hands over."""
    return next((a for a in reversed(exn.args) if isinstance(a, str) and a), "?")
