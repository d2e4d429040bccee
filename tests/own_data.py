"""A folder of images and captions in one of the layouts ``data=folder`` reads, with known defects."""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

LAYOUTS = ("txt", "json", "jsonl", "csv")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 40)}
SHAPES = ("square", "circle")


@dataclass
class OwnFolder:
    """What the test wrote: the usable images with their captions and scores, and the bad files."""

    root: Path
    captions: dict[str, str] = field(default_factory=dict)  # relative image path -> caption as written
    scores: dict[str, float] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)
    uncaptioned: list[str] = field(default_factory=list)


def _image(i: int) -> tuple[Image.Image, str]:
    rng = random.Random(i)
    colour, back = rng.sample(list(COLOURS), 2)
    shape = SHAPES[i % 2]
    image = Image.new("RGB", (40 + 4 * (i % 3), 32), COLOURS[back])
    x, y, s = rng.randrange(0, 20), rng.randrange(0, 12), rng.randrange(8, 18)
    box = (x, y, x + s, y + s)
    draw = ImageDraw.Draw(image)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return image, f"a {colour}  {shape} on a\n{back} background "  # stray whitespace: normalised on read


def _broken(kind: int) -> bytes:
    if kind == 0:
        return b"this is not an image at all"
    if kind == 1:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
        return buf.getvalue()[:60]  # truncated
    return b""


def make_folder(root: Path, layout: str, count: int = 200, broken: int = 3, uncaptioned: int = 2) -> OwnFolder:
    """``count`` images under ``root`` (every fifth in a subfolder), captions in ``layout``. Images 7, 57,
    107, ... (``broken`` of them) are undecodable files, images 23, 73, ... (``uncaptioned``) have none."""
    assert layout in LAYOUTS
    out = OwnFolder(root)
    rows = []
    broken_at = {7 + 50 * k for k in range(broken)}
    uncaptioned_at = {23 + 50 * k for k in range(uncaptioned)}
    for i in range(count):
        rel = f"{'sub/' if i % 5 == 0 else ''}img.{i:04d}.{'png' if i % 4 == 0 else 'jpg'}"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        image, caption = _image(i)
        if i in broken_at:
            path.write_bytes(_broken(len(out.broken)))
            out.broken.append(rel)
        else:
            image.save(path, format="PNG" if rel.endswith("png") else "JPEG", quality=90)
        score = 3.0 + (i % 6)
        if i in uncaptioned_at:
            out.uncaptioned.append(rel)
            continue
        if i not in broken_at:
            out.captions[rel], out.scores[rel] = caption, score
        if layout == "txt":
            path.with_suffix(".txt").write_text(caption)
        elif layout == "json":
            path.with_suffix(".json").write_text(json.dumps({"caption": caption, "aesthetic_score": score}))
        else:
            rows.append({"file_name": rel, "text": caption, "aesthetic_score": score})
    if layout == "jsonl":
        (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif layout == "csv":
        with (root / "metadata.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, ["file_name", "text", "aesthetic_score"])
            writer.writeheader()
            writer.writerows(rows)
    return out
