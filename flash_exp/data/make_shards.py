"""``python -m flash_exp.data.make_shards``: a folder of images and captions to webdataset shards.

    python -m flash_exp.data.make_shards --src /data/my-images --out /data/my-shards [--shard-size 1000]
    python -m flash_exp.train 'data.shards=["/data/my-shards/shard-{000000..000003}.tar"]'

The folder layouts are those of ``data=folder`` (:mod:`flash_exp.data.folder`). Each image is
checked by decoding it; images without a caption or that do not decode are left out and listed by
reason (printed, and kept in ``<out>/make_shards.json``). Captions are normalised (whitespace
collapsed) and written as ``json{caption, aesthetic_score, ...}`` beside the image, whose bytes are
copied unchanged unless ``--resize SIDE`` re-encodes those with a shorter side above SIDE as JPEG
(quality 95) at that shorter side. Shard i holds the usable images of the folder's i-th group of
``--shard-size`` files (sorted by path), so a run on the shards and a ``data=folder`` run with
``data.files_per_shard`` equal to the shard size read the same stream.

An ``--out`` that already holds shards is refused, naming them, so that a brace pattern or glob never
reads two runs' shards together; ``--overwrite`` replaces them: the shards this run does not write are
removed, and ``make_shards.json`` describes this run.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from flash_exp.data.folder import FILES_PER_SHARD, FolderRecord, group_records, record_sample, scan_folder
from flash_exp.data.shard_writer import write_groups

SHARD_PATTERN = "shard-%06d.tar"
SHARD_GLOB = "shard-*.tar"
RESIZED_QUALITY = 95
EXAMPLES_PER_REASON = 5


@dataclass
class ShardSummary:
    """What :func:`make_shards` wrote and left out."""

    shards: list[Path]
    written: int = 0
    skipped: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))  # reason -> files
    resized: int = 0

    def pattern(self) -> str:
        """The brace pattern naming every shard (``data.shards``)."""
        if len(self.shards) == 1:
            return str(self.shards[0])
        last = len(self.shards) - 1
        return str(self.shards[0].parent / SHARD_PATTERN.replace("%06d", f"{{{0:06d}..{last:06d}}}"))

    def report(self) -> str:
        lines = [f"wrote {self.written} samples in {len(self.shards)} shard(s)"
                 + (f" ({self.resized} images resized)" if self.resized else "")]
        total = sum(len(files) for files in self.skipped.values())
        lines.append(f"skipped {total} file(s)" + (":" if total else ""))
        for reason, files in sorted(self.skipped.items(), key=lambda item: -len(item[1])):
            shown = ", ".join(str(f) for f in files[:EXAMPLES_PER_REASON])
            more = f" and {len(files) - EXAMPLES_PER_REASON} more" if len(files) > EXAMPLES_PER_REASON else ""
            lines.append(f"  {len(files)} {reason}: {shown}{more}")
        lines.append(f"train on them with: 'data.shards=[\"{self.pattern()}\"]'")
        return "\n".join(lines)


def _reason(detail: str) -> str:
    """The reason without its per-file detail, to group files: 'undecodable image (...)' -> 'undecodable image'."""
    return detail.split(" (", 1)[0]


def resized_jpeg(data: bytes, side: int) -> bytes | None:
    """``data`` re-encoded as JPEG with its shorter side at ``side`` (bicubic), or None when it is not larger."""
    with Image.open(io.BytesIO(data)) as image:
        if min(image.size) <= side:
            return None
        scale = side / min(image.size)
        size = (max(side, round(image.width * scale)), max(side, round(image.height * scale)))
        out = io.BytesIO()
        image.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(out, format="JPEG",
                                                                          quality=RESIZED_QUALITY)
        return out.getvalue()


def _samples(group: list[FolderRecord], summary: ShardSummary, resize: int | None,
             progress: tqdm) -> Iterator[dict]:
    for record in group:
        progress.update()
        sample, detail = record_sample(record)
        if sample is None:
            summary.skipped[_reason(detail)].append(record.path)
            continue
        smaller = resized_jpeg(sample[record.extension], resize) if resize is not None else None
        if smaller is not None:
            del sample[record.extension]
            sample["jpg"] = smaller
            summary.resized += 1
        summary.written += 1
        yield sample


def existing_shards(out: Path) -> list[Path]:
    """The shards a previous run left in ``out``, sorted."""
    return sorted(Path(out).glob(SHARD_GLOB)) if Path(out).is_dir() else []


def clear_stale_shards(out: Path, new_count: int, overwrite: bool) -> None:
    """Refuse an ``out`` that holds shards (FileExistsError naming them) unless ``overwrite``; then remove
    those the new run of ``new_count`` shards will not write over."""
    old = existing_shards(out)
    if old and not overwrite:
        shown = ", ".join(p.name for p in old[:EXAMPLES_PER_REASON])
        more = f" and {len(old) - EXAMPLES_PER_REASON} more" if len(old) > EXAMPLES_PER_REASON else ""
        raise FileExistsError(f"--out {out} already holds {len(old)} shard(s) ({shown}{more}): pass --overwrite "
                              "to replace them, or choose an empty folder")
    kept = {Path(out) / (SHARD_PATTERN % i) for i in range(new_count)}
    for path in old:
        if path not in kept:
            path.unlink()


def make_shards(src: Path, out: Path, shard_size: int = FILES_PER_SHARD, resize: int | None = None,
                overwrite: bool = False) -> ShardSummary:
    """Write the folder ``src`` as shards ``out/shard-NNNNNN.tar``; returns what was written and skipped.

    Raises FileExistsError when ``out`` holds shards and not ``overwrite`` (see :func:`clear_stale_shards`)."""
    records = scan_folder(src)
    clear_stale_shards(Path(out), len(group_records(records, shard_size)), overwrite)
    summary = ShardSummary(shards=[])
    with tqdm(total=len(records), desc="make_shards", unit="img") as progress:
        groups = (_samples(group, summary, resize, progress) for group in group_records(records, shard_size))
        summary.shards = write_groups(groups, str(Path(out) / SHARD_PATTERN))
    (Path(out) / "make_shards.json").write_text(json.dumps({
        "src": str(src), "shard_size": shard_size, "resize": resize, "written": summary.written,
        "skipped": {reason: [str(f) for f in files] for reason, files in summary.skipped.items()},
    }, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> ShardSummary:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("--src", type=Path, required=True, help="folder of images and captions")
    parser.add_argument("--out", type=Path, required=True, help="directory of the shards")
    parser.add_argument("--shard-size", type=int, default=FILES_PER_SHARD,
                        help="folder files per shard (data.files_per_shard of a folder run)")
    parser.add_argument("--resize", type=int, default=None, metavar="SIDE",
                        help="re-encode images whose shorter side is above SIDE as JPEG at that side")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards already in --out (those this run does not write are removed)")
    args = parser.parse_args(argv)
    if args.shard_size <= 0 or (args.resize is not None and args.resize <= 0):
        parser.error("--shard-size and --resize must be positive")
    try:
        summary = make_shards(args.src, args.out, args.shard_size, args.resize, args.overwrite)
    except (FileNotFoundError, FileExistsError) as err:
        parser.exit(2, f"error: {err}\n")
    print(summary.report())
    return summary


if __name__ == "__main__":
    main()
