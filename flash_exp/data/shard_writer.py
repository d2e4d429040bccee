"""Write samples as webdataset tar shards (plain ``.tar`` or gzip-compressed ``.tar.gz``).

The output is byte-reproducible: tar member times are fixed at 0 and the gzip header carries no
time stamp, so writing the same samples twice gives identical files.
"""

from __future__ import annotations

import contextlib
import gzip
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import webdataset as wds


class _ReproducibleOpener:
    """File opener for ``wds.ShardWriter``: gzip streams with mtime 0 for ``*.gz`` names.

    ``ShardWriter`` does not close streams it did not open itself, so :meth:`close` is passed as
    its ``post`` hook and closes each shard once it is complete.
    """

    def __init__(self) -> None:
        self._streams: dict[str, list[IO[bytes]]] = {}

    def __call__(self, fname: str) -> IO[bytes]:
        raw = open(fname, "wb")
        if not fname.endswith(".gz"):
            self._streams[fname] = [raw]
            return raw
        zipped = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        self._streams[fname] = [zipped, raw]
        return zipped

    def close(self, fname: str) -> None:
        for stream in self._streams.pop(fname):
            stream.close()


@contextlib.contextmanager
def _shard_writer(pattern: str, **limits: float) -> Iterator[tuple[wds.ShardWriter, list[Path]]]:
    """A ``ShardWriter`` on ``pattern`` with reproducible bytes (fixed mtime, gzip without a timestamp)
    and the list that receives each shard's path once it is closed."""
    Path(pattern % 0).parent.mkdir(parents=True, exist_ok=True)
    opener = _ReproducibleOpener()
    written: list[Path] = []

    def finished(fname: str) -> None:
        opener.close(fname)
        written.append(Path(fname))

    with wds.ShardWriter(pattern, opener=opener, post=finished, verbose=0, mtime=0.0, **limits) as sink:
        yield sink, written


def write_shards(samples: Iterable[dict], pattern: str, maxcount: int) -> list[Path]:
    """Write ``samples`` into shards named ``pattern % shard_index``, ``maxcount`` samples each.

    Each sample is a dict with ``__key__`` (str) and one entry per file extension, e.g. ``jpg``
    (a PIL image, encoded by webdataset at JPEG quality 100, or already-encoded bytes, written
    as is) and ``json`` (a dict). A pattern ending in ``.gz`` gives gzip-compressed tars. The
    parent directory is created. Returns the paths of the shards written, in order.
    """
    with _shard_writer(pattern, maxcount=maxcount) as (sink, written):
        for sample in samples:
            sink.write(sample)
    return written


def write_groups(groups: Iterable[Iterable[dict]], pattern: str) -> list[Path]:
    """Write each group of samples into its own shard ``pattern % group_index`` (an empty group gives an
    empty shard, so shard i always holds group i); samples as in :func:`write_shards`."""
    unbounded = float("inf")
    with _shard_writer(pattern, maxcount=unbounded, maxsize=unbounded) as (sink, written):
        for index, group in enumerate(groups):
            if index > 0:
                sink.next_stream()
            for sample in group:
                sink.write(sample)
    return written
