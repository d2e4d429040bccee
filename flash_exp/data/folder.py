"""``data=folder``: a directory of images and captions, read through the webdataset pipeline.

Captions come in the layouts of kohya's sd-scripts and of the diffusers ``imagefolder`` loader:

* same-name files: ``cat.jpg`` + ``cat.txt`` (the caption), or ``cat.json`` (``caption`` or ``text``,
  optional ``aesthetic_score`` and any field a task reads, e.g. ``face_box``);
* ``metadata.jsonl`` or ``metadata.csv`` in the folder or a subfolder: one row per image with
  ``file_name`` (relative to that metadata file), ``text`` (or ``caption``) and optional
  ``aesthetic_score``. A metadata row wins over a same-name file.

Images (``jpg``, ``jpeg``, ``png``, ``webp``) are found recursively and sorted by relative path; each
group of ``files_per_shard`` consecutive files is read like one webdataset shard, so the shards that
``python -m flash_exp.data.make_shards`` writes (one per group, same size) give the same stream: the
same shard order per epoch, the same split over ranks and workers, the same shuffle buffer, the same
filters, crop, resolution, task inputs and exact resume (all of :class:`CaptionedImageStream`).
Images without a caption and images that do not decode are skipped and counted before the shuffle
buffer, as ``make_shards`` leaves them out; each image of the folder is therefore decoded twice.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from flash_exp.data.webdataset import CaptionedImageStream
from flash_exp.metrics.prompts import normalise_caption

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_FIELDS = ("text", "caption")  # metadata row / same-name json: the first present is the caption
FILES_PER_SHARD = 1000


@dataclass
class FolderRecord:
    """One image of a folder: its sample key, file, caption (None: none found) and extra metadata."""

    key: str
    path: Path
    caption: str | None
    meta: dict[str, Any] = field(default_factory=dict)  # aesthetic_score and any other field

    @property
    def extension(self) -> str:
        return self.path.suffix[1:].lower()


def _caption_of(row: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The normalised caption of a metadata row (None when absent or blank) and its other fields."""
    caption = next((row[k] for k in CAPTION_FIELDS if isinstance(row.get(k), str)), None)
    caption = normalise_caption(caption) if caption else None
    rest = {k: v for k, v in row.items() if k not in (*CAPTION_FIELDS, "file_name")}
    score = rest.get("aesthetic_score")
    if isinstance(score, str):  # a csv value; blank or not a number: no score
        try:
            rest["aesthetic_score"] = float(score)
        except ValueError:
            rest["aesthetic_score"] = None
    return caption or None, rest


def _metadata_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.name.endswith(".jsonl"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    log.warning("%s line %d is not json (%s): ignored", path, number, err)
    else:
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f)


def _metadata(root: Path) -> dict[Path, dict[str, Any]]:
    """Rows of every metadata file under ``root``, by the image path they name."""
    rows: dict[Path, dict[str, Any]] = {}
    for name in METADATA_FILES:
        for path in sorted(root.rglob(name)):
            for row in _metadata_rows(path):
                if row.get("file_name"):
                    rows[(path.parent / row["file_name"]).resolve()] = row
    return rows


def _sidecar(image: Path) -> tuple[str | None, dict[str, Any]]:
    """Caption and fields of a same-name ``.txt`` or ``.json`` file (``.txt`` first)."""
    txt, meta = image.with_suffix(".txt"), image.with_suffix(".json")
    if txt.is_file():
        caption = normalise_caption(txt.read_text(encoding="utf-8", errors="replace"))
        return caption or None, {}
    if meta.is_file():
        try:
            row = json.loads(meta.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None, {}
        if isinstance(row, dict):
            return _caption_of(row)
    return None, {}


def _key(relative: Path, taken: set[str]) -> str:
    """A webdataset key for ``relative``: the path without its extension, dots replaced (a key holds
    none), made unique with the extension when two images share a name."""
    stem = relative.with_suffix("").as_posix()
    parent, _, name = stem.rpartition("/")
    key = (parent + "/" if parent else "") + name.replace(".", "_")
    if key in taken:
        key = f"{key}_{relative.suffix[1:].lower()}"
    taken.add(key)
    return key


def scan_folder(root: str | Path) -> list[FolderRecord]:
    """Every image under ``root`` with its caption, sorted by relative path.

    Raises FileNotFoundError when ``root`` is not a directory or holds no image.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={str(root)!r} is not a directory")
    rows = _metadata(root)
    images = sorted(p for p in root.rglob("*") if p.suffix[1:].lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise FileNotFoundError(f"data.root={str(root)!r} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
    taken: set[str] = set()
    records = []
    for image in images:
        row = rows.get(image.resolve())
        caption, meta = _caption_of(row) if row is not None else _sidecar(image)
        records.append(FolderRecord(_key(image.relative_to(root), taken), image, caption, meta))
    return records


def group_records(records: list[FolderRecord], files_per_shard: int) -> list[list[FolderRecord]]:
    """Consecutive groups of ``files_per_shard`` records: the shards of the folder."""
    if files_per_shard <= 0:
        raise ValueError(f"files per shard must be positive, got {files_per_shard}")
    return [records[i:i + files_per_shard] for i in range(0, len(records), files_per_shard)]


def image_problem(data: bytes) -> str | None:
    """None when ``data`` decodes as an image, else why not (the check training applies)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exn:  # PIL raises many types for corrupt files
        return f"undecodable image ({type(exn).__name__}: {exn})"
    return None


def record_sample(record: FolderRecord, caption_key: str = "caption") -> tuple[dict | None, str]:
    """The webdataset sample of ``record`` (``__key__``, the image bytes under its extension and
    ``json``: the caption under ``caption_key`` and the other fields), or None and the reason."""
    if record.caption is None:
        return None, "missing caption"
    try:
        data = record.path.read_bytes()
    except OSError as exn:
        return None, f"unreadable file ({exn})"
    problem = image_problem(data)
    if problem is not None:
        return None, problem
    meta = {caption_key: record.caption, **record.meta}
    return {"__key__": record.key, record.extension: data, "json": json.dumps(meta).encode()}, ""


class FolderImageStream(CaptionedImageStream):
    """:class:`CaptionedImageStream` over a folder of images and captions (see the module docstring)."""

    def __init__(self, root: str | Path, resolution: int, batch_size: int,
                 files_per_shard: int = FILES_PER_SHARD, **kwargs: Any) -> None:
        self.root = Path(root).expanduser()
        groups = group_records(scan_folder(self.root), files_per_shard)
        names = [f"{self.root}#{i * files_per_shard}-{i * files_per_shard + len(g)}" for i, g in enumerate(groups)]
        self.groups = dict(zip(names, groups, strict=True))
        super().__init__(names, resolution, batch_size, **kwargs)

    def _raw_samples(self, urls: list[str]) -> Iterator[dict]:
        """The samples of the groups named by ``urls``, in order; files without a caption or that do
        not decode are counted as skipped and left out, as ``make_shards`` leaves them out."""
        for url in urls:
            for record in self.groups[url]:
                sample, reason = record_sample(record, self.caption_key)
                if sample is None:
                    self._reject(reason, str(record.path))
                    continue
                yield sample
