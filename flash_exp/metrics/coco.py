"""COCO caption annotations -> a deterministic prompt set and the FID reference images.

Selection rule (seeded, so the same files and seed give the same prompts on every machine):

1. images: every entry of ``images`` in the annotation JSON that has a caption, sorted by image id;
2. if fewer than all are wanted, ``random.Random(caption_seed).sample`` of them, kept in id order;
3. one caption per selected image, drawn with the same RNG (``randrange`` over the image's captions
   sorted by annotation id), in image-id order; whitespace collapsed.

Further draws of the benchmark take their prompts from the pool that follows these: every other
caption of the annotations (each image's captions in annotation-id order, images in id order, the
chosen ones left out), shuffled by ``random.Random(caption_seed)``. With ``reference: selected`` every
draw keeps the chosen captions (the reference images are theirs).

Alternatively a captions file (one caption per line, e.g. GigaGAN's COCO2014 30k list) gives the
prompts: its first ``num_images`` lines, in order (further draws: the lines after them). The reference images are either every image of
the annotation file (``reference: all``, the GigaGAN/DMD2 convention: all of val2014 for FID-30k)
or only the selected ones (``reference: selected``; not possible with a captions file).
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from flash_exp.config import ConfigError
from flash_exp.metrics.prompts import PromptSet, normalise_caption, read_captions_file

REFERENCE_MODES = ("all", "selected")
COCO_ROOT_ENV = "COCO_ROOT"


class CocoFilesMissing(FileNotFoundError):
    """A COCO annotation file, image folder or image named by a benchmark is not on disk."""


def _missing(benchmark: str, what: str, paths: list[Path], root: Path) -> CocoFilesMissing:
    listed = ", ".join(str(p) for p in paths[:3]) + (f" (and {len(paths) - 3} more)" if len(paths) > 3 else "")
    return CocoFilesMissing(
        f"benchmark {benchmark!r}: missing {what}: {listed}. The COCO root is {root}; set the environment "
        f"variable {COCO_ROOT_ENV} (or coco_root=<dir>) to a directory holding annotations/captions_*.json "
        f"and the image folders (val2014/, val2017/)."
    )


def _resolve(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def load_annotations(path: Path) -> tuple[dict[int, str], dict[int, list[str]]]:
    """``(file name by image id, captions by image id)``; captions in annotation-id order."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    files = {int(img["id"]): img["file_name"] for img in data["images"]}
    by_image: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for ann in data["annotations"]:
        by_image[int(ann["image_id"])].append((int(ann["id"]), normalise_caption(ann["caption"])))
    captions = {image_id: [c for _, c in sorted(anns)] for image_id, anns in by_image.items()}
    return files, captions


def select_captions(captions: dict[int, list[str]], count: int, seed: int) -> list[tuple[int, str]]:
    """``count`` (image id, caption) pairs by the selection rule of this module, in image-id order."""
    ids = sorted(i for i, caps in captions.items() if caps)
    if count > len(ids):
        raise ConfigError("num_images", count, f"at most {len(ids)}: the annotations caption {len(ids)} images")
    rng = random.Random(seed)
    chosen = ids if count == len(ids) else sorted(rng.sample(ids, count))
    return [(i, captions[i][rng.randrange(len(captions[i]))]) for i in chosen]


def other_captions(captions: dict[int, list[str]], chosen: list[tuple[int, str]], seed: int) -> list[str]:
    """Every caption not in ``chosen`` (image ids in order, each image's captions in order), shuffled by
    ``random.Random(seed)``: the prompt pool of further draws."""
    taken = set(chosen)
    rest = [c for i in sorted(captions) for c in captions[i] if (i, c) not in taken]
    random.Random(seed).shuffle(rest)
    return rest


def coco_prompt_set(benchmark: str, root: Path, annotations: str, images: str, num_images: int,
                    caption_seed: int = 0, captions_file: str | None = None,
                    reference: str = "all") -> PromptSet:
    """The prompt set of a COCO benchmark; paths are relative to ``root`` unless absolute.

    Raises :class:`CocoFilesMissing` naming every missing path and the ``COCO_ROOT`` variable.
    """
    if reference not in REFERENCE_MODES:
        raise ConfigError(f"{benchmark}.coco.reference", reference, f"allowed values are {', '.join(REFERENCE_MODES)}")
    root = Path(root).expanduser()
    ann_path, image_dir = _resolve(root, annotations), _resolve(root, images)
    caps_path = _resolve(root, captions_file) if captions_file else None
    absent = [p for p in (ann_path, image_dir, caps_path) if p is not None and not p.exists()]
    if absent:
        raise _missing(benchmark, "COCO files", absent, root)
    files, captions = load_annotations(ann_path)
    provenance = {"annotations": ann_path.name, "images": image_dir.name, "reference": reference}
    if caps_path is not None:
        if reference == "selected":
            raise ConfigError(f"{benchmark}.coco.reference", reference,
                              "needs captions chosen from the annotations, not from coco.captions_file")
        pool = read_captions_file(caps_path, num_images)
        prompts = pool[:num_images]
        provenance["captions_file"] = caps_path.name
        ref_ids = sorted(files)
    else:
        pairs = select_captions(captions, num_images, caption_seed)
        prompts = [c for _, c in pairs]
        provenance.update(caption_seed=caption_seed, selection="seeded-sample+randrange (flash_exp.metrics.coco)")
        ref_ids = sorted(files) if reference == "all" else [i for i, _ in pairs]
        pool = prompts + (other_captions(captions, pairs, caption_seed) if reference == "all" else [])
    reference_files = [image_dir / files[i] for i in ref_ids]
    absent = [p for p in reference_files if not p.is_file()]
    if absent:
        raise _missing(benchmark, f"{len(absent)} of {len(reference_files)} reference images", absent, root)
    return PromptSet(prompts, reference_files, provenance, pool=pool)
