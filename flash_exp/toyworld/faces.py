"""Synthetic face-like images for the toy face-swap task.

An identity is a (skin, hair, eyes) colour triple; an image draws that identity as a head (hair cap,
face oval, two eyes, a mouth) at a random place and size on a flat background from the shapes'
backgrounds. Every sample carries the target image (``jpg``), a reference image of the *same*
identity drawn with other geometry and background (``ref.jpg``), and json ``{caption, aesthetic_score,
face_box, identity}``; ``face_box`` = [x0, y0, x1, y1] of the head as fractions of the image.
The caption names the background only: the identity must come from the reference.
Samples depend only on (seed, split, index), as the shapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import product

import numpy as np
from PIL import Image, ImageDraw

from flash_exp.toyworld.shapes import BACKGROUNDS, IMAGE_SIZE, SPLITS, encode_jpeg

SKINS: dict[str, tuple[int, int, int]] = {
    "peach": (246, 204, 170),
    "tan": (205, 150, 100),
    "brown": (130, 80, 50),
    "olive": (175, 170, 95),
}
HAIRS: dict[str, tuple[int, int, int]] = {
    "black": (25, 22, 20),
    "blond": (240, 205, 70),
    "red": (195, 55, 25),
    "white": (245, 245, 245),
    "blue": (50, 85, 215),
}
EYES: dict[str, tuple[int, int, int]] = {
    "blue": (30, 90, 235),
    "green": (30, 170, 60),
    "dark": (40, 25, 15),
}
MOUTH = (150, 30, 40)
_SUPERSAMPLE = 4
_RADIUS_RANGE = (7.0, 11.0)  # half height of the face oval, output pixels
_FACE_SEED = 7  # separates the face streams from the shapes' streams


@dataclass(frozen=True)
class Identity:
    skin: str
    hair: str
    eyes: str

    def as_dict(self) -> dict:
        return {"skin": self.skin, "hair": self.hair, "eyes": self.eyes}


@dataclass(frozen=True)
class FaceSpec:
    identity: Identity
    background: str
    cx: float
    cy: float
    radius: float
    background_rgb: tuple[int, int, int]

    def box(self) -> list[float]:
        """[x0, y0, x1, y1] of the head (hair included) as fractions of the image."""
        r = self.radius
        x0, x1 = self.cx - 0.95 * r, self.cx + 0.95 * r
        y0, y1 = self.cy - 1.3 * r, self.cy + 1.05 * r
        return [round(max(0.0, v / IMAGE_SIZE), 4) if i < 2 else round(min(1.0, v / IMAGE_SIZE), 4)
                for i, v in enumerate((x0, y0, x1, y1))]


def all_identities() -> list[Identity]:
    return [Identity(s, h, e) for s, h, e in product(SKINS, HAIRS, EYES)]


def _rng(seed: int, split: str, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, _FACE_SEED, SPLITS.index(split), index, stream])


def face_spec(identity: Identity, rng: np.random.Generator) -> FaceSpec:
    """A random placement and background for ``identity``; the head stays inside the image."""
    background = list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]
    r = float(rng.uniform(*_RADIUS_RANGE))
    cx = float(rng.uniform(r + 1.0, IMAGE_SIZE - r - 1.0))
    cy = float(rng.uniform(1.35 * r + 0.5, IMAGE_SIZE - 1.1 * r - 0.5))
    jitter = rng.integers(-8, 9, size=3)
    back = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(BACKGROUNDS[background], jitter, strict=True))
    return FaceSpec(identity, background, cx, cy, r, back)


def render_face(spec: FaceSpec) -> Image.Image:
    """Draw ``spec`` as an anti-aliased 32x32 RGB image (drawn at 4x, box-filtered down)."""
    s = _SUPERSAMPLE
    big = Image.new("RGB", (IMAGE_SIZE * s, IMAGE_SIZE * s), spec.background_rgb)
    draw = ImageDraw.Draw(big)
    cx, cy, r = spec.cx * s, spec.cy * s, spec.radius * s
    ident = spec.identity
    # hair: a larger oval behind the upper head
    draw.ellipse([cx - 0.95 * r, cy - 1.3 * r, cx + 0.95 * r, cy + 0.35 * r], fill=HAIRS[ident.hair])
    # face oval
    draw.ellipse([cx - 0.78 * r, cy - 0.85 * r, cx + 0.78 * r, cy + 1.05 * r], fill=SKINS[ident.skin])
    # eyes
    e = 0.17 * r
    for side in (-1, 1):
        ex, ey = cx + side * 0.33 * r, cy - 0.12 * r
        draw.ellipse([ex - e, ey - e, ex + e, ey + e], fill=EYES[ident.eyes])
    # mouth
    draw.ellipse([cx - 0.3 * r, cy + 0.45 * r, cx + 0.3 * r, cy + 0.62 * r], fill=MOUTH)
    return big.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)


def caption(background: str) -> str:
    return f"a face on a {background} background"


def identity_of(seed: int, split: str, index: int) -> Identity:
    identities = all_identities()
    return identities[int(_rng(seed, split, index, 0).integers(len(identities)))]


def make_face_sample(seed: int, split: str, index: int) -> dict:
    """One webdataset sample: ``jpg`` (target), ``ref.jpg`` (same identity, other pose) and ``json``."""
    identity = identity_of(seed, split, index)
    target = face_spec(identity, _rng(seed, split, index, 1))
    reference = face_spec(identity, _rng(seed, split, index, 2))
    return {
        "__key__": f"face-{split}-{index:06d}",
        "jpg": encode_jpeg(render_face(target)),
        "ref.jpg": encode_jpeg(render_face(reference)),
        "json": {"caption": caption(target.background), "aesthetic_score": 6.0, "face_box": target.box(),
                 "identity": identity.as_dict()},
    }


def iter_face_samples(seed: int, split: str, count: int) -> Iterator[dict]:
    for index in range(count):
        yield make_face_sample(seed, split, index)


def face_captions() -> list[str]:
    return [caption(b) for b in BACKGROUNDS]


def caption_words() -> list[str]:
    return sorted({w for c in face_captions() for w in c.split()})


__all__ = ["EYES", "HAIRS", "SKINS", "FaceSpec", "Identity", "all_identities", "caption", "caption_words",
           "face_captions", "face_spec", "identity_of", "iter_face_samples", "make_face_sample", "render_face"]
