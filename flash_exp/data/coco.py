"""``python -m flash_exp.data.coco check``: are the COCO files of the benchmarks on this machine?

    python -m flash_exp.data.coco check root=/data/coco eval=paper

For every benchmark of ``eval`` (a file of ``conf/eval/``; ``eval=coco2017_5k`` names one benchmark
group) it says what is present and what is missing under the COCO root (``root=``, default
``$COCO_ROOT``, else ``data/coco``, as ``python -m flash_exp.evaluate``): the annotation file, the
image folder and its image count against the full split (40,504 images in val2014, 5,000 in
val2017), the annotated images absent from the folder, and a captions file when one is named. It
ends with the commands that download and unpack what is missing, and exits 1 when something is.
The FID reference statistics need no download: the first evaluation computes them from these images
and caches them (``cache_dir``/fid_stats).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from flash_exp.config import ConfigError
from flash_exp.metrics.benchmarks import BENCHMARKS_DIR, BenchmarkConfig, load_benchmark
from flash_exp.metrics.coco import COCO_ROOT_ENV

EVAL_DIR = Path(__file__).resolve().parents[2] / "conf" / "eval"
DEFAULT_ROOT = "data/coco"
EXPECTED_IMAGES = {"val2014": 40_504, "val2017": 5_000}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
COCO_URL = "http://images.cocodataset.org"
ANNOTATION_ZIPS = {"captions_val2014.json": "annotations/annotations_trainval2014.zip",
                   "captions_val2017.json": "annotations/annotations_trainval2017.zip"}


@dataclass
class BenchmarkFiles:
    """What a COCO benchmark needs under the root, and what of it is there."""

    name: str
    annotations: Path
    annotations_present: bool
    images: Path
    image_count: int  # image files in the folder (0 when it is absent)
    expected_images: int | None  # the full split's size; None for an unknown folder name
    annotated_missing: int | None = None  # images the annotation file lists that are not in the folder
    captions_file: Path | None = None
    captions_present: bool = True
    commands: list[str] = field(default_factory=list)

    @property
    def images_complete(self) -> bool:
        enough = self.expected_images is None or self.image_count >= self.expected_images
        return self.image_count > 0 and enough and not self.annotated_missing

    @property
    def ready(self) -> bool:
        return self.annotations_present and self.images_complete and self.captions_present

    def missing(self) -> list[str]:
        out = [] if self.annotations_present else [f"annotation file {self.annotations}"]
        if not self.images_complete:
            out.append(f"images in {self.images}")
        if not self.captions_present:
            out.append(f"captions file {self.captions_file}")
        return out


def eval_benchmarks(eval_name: str) -> list[str]:
    """The benchmark names of ``conf/eval/<eval_name>.yaml``."""
    path = EVAL_DIR / f"{eval_name}.yaml"
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in EVAL_DIR.glob("*.yaml")))
        raise ConfigError("eval", eval_name, f"allowed values are {names}")
    return list(OmegaConf.load(path).benchmarks)


def _image_names(directory: Path) -> set[str]:
    if not directory.is_dir():
        return set()
    return {e.name for e in os.scandir(directory) if e.name.lower().endswith(IMAGE_SUFFIXES)}


def _download_commands(files: BenchmarkFiles, root: Path) -> list[str]:
    commands = []
    if not files.annotations_present and files.annotations.name in ANNOTATION_ZIPS:
        archive = ANNOTATION_ZIPS[files.annotations.name]
        commands.append(f"wget -c {COCO_URL}/{archive} && unzip -o {Path(archive).name} "
                        f"'annotations/captions_*' -d {root}")
    if not files.images_complete and files.images.name in EXPECTED_IMAGES:
        archive = f"zips/{files.images.name}.zip"
        commands.append(f"wget -c {COCO_URL}/{archive} && unzip -qo {Path(archive).name} -d {files.images.parent}")
    if not files.captions_present:
        commands.append(f"# {files.captions_file}: the captions list named by coco.captions_file of "
                        f"eval/benchmarks/{files.name}.yaml (one caption per line); no public download here")
    return commands


def check_benchmark(cfg: BenchmarkConfig, root: Path) -> BenchmarkFiles:
    """The files of the COCO benchmark ``cfg`` under ``root``, present or not."""
    c = cfg.coco
    annotations, images = root / c.annotations, root / c.images
    names = _image_names(images)
    files = BenchmarkFiles(cfg.name, annotations, annotations.is_file(), images, len(names),
                           EXPECTED_IMAGES.get(images.name))
    if files.annotations_present:
        listed = {img["file_name"] for img in json.loads(annotations.read_text(encoding="utf-8"))["images"]}
        files.annotated_missing = len(listed - names)
        if files.expected_images is None:
            files.expected_images = len(listed)
    if c.captions_file:
        files.captions_file = root / c.captions_file
        files.captions_present = files.captions_file.is_file()
    files.commands = _download_commands(files, root)
    return files


def check(root: Path, benchmarks: list[str], directory: Path = BENCHMARKS_DIR) -> list[BenchmarkFiles]:
    """The COCO files of each COCO benchmark in ``benchmarks`` (others need no files) under ``root``."""
    configs = [load_benchmark(name, directory) for name in benchmarks]
    return [check_benchmark(cfg, root) for cfg in configs if cfg.source == "coco"]


def report(root: Path, benchmarks: list[str], results: list[BenchmarkFiles]) -> str:
    """The text ``check`` prints."""
    lines = [f"COCO root: {root} (root=DIR or ${COCO_ROOT_ENV})"]
    others = sorted(set(benchmarks) - {r.name for r in results})
    for r in results:
        expected = f" of {r.expected_images:,}" if r.expected_images is not None else ""
        lines.append(f"{r.name}:")
        lines.append(f"  annotations  {r.annotations}: {'present' if r.annotations_present else 'MISSING'}")
        state = "present" if r.images_complete else ("MISSING" if not r.image_count else "INCOMPLETE")
        absent = f", {r.annotated_missing:,} annotated images absent" if r.annotated_missing else ""
        lines.append(f"  images       {r.images}: {state}, {r.image_count:,}{expected} images{absent}")
        if r.captions_file is not None:
            lines.append(f"  captions     {r.captions_file}: {'present' if r.captions_present else 'MISSING'}")
        lines.append("  -> ready" if r.ready else f"  -> missing: {'; '.join(r.missing())}")
    for name in others:
        lines.append(f"{name}: needs no COCO files")
    commands = list(dict.fromkeys(c for r in results for c in r.commands))
    if commands:
        lines.append("download what is missing with:")
        lines.extend(f"  {c}" for c in commands)
    lines.append("FID reference statistics: computed from these images by the first evaluation, then cached "
                 "(cache_dir/fid_stats)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    usage = "usage: python -m flash_exp.data.coco check [root=DIR] [eval=NAME] [benchmarks_dir=DIR]"
    if not args or args[0] != "check":
        print(usage, file=sys.stderr)
        return 2
    options = {"root": os.environ.get(COCO_ROOT_ENV, DEFAULT_ROOT), "eval": "paper",
               "benchmarks_dir": str(BENCHMARKS_DIR)}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in options:
            print(f"error: unknown argument {arg!r}; {usage}", file=sys.stderr)
            return 2
        options[key] = value
    root = Path(options["root"]).expanduser()
    try:
        benchmarks = eval_benchmarks(options["eval"])
        results = check(root, benchmarks, Path(options["benchmarks_dir"]))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(root, benchmarks, results))
    return 0 if all(r.ready for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
