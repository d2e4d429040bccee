"""The evaluation's seeds: one rule for the initial noise of every generated image, and KID's subsets.

Image ``i`` of draw ``d`` of a benchmark with base seed ``s`` starts from the noise of a CPU
``torch.Generator`` seeded :func:`image_noise_seed` ``(s, d, i)``: the first 8 bytes (big-endian) of
``sha256("<s>/<d>/<i>")``, shifted right by one bit (a 63-bit seed). No two (seed, draw, image)
triples share a generator seed in practice (a collision of 63-bit hashes), unlike ``s + i``, where
seeds 0 and 1 share 255 of 256 noises. The rule is written into the eval spec (:data:`NOISE_RULE`).
"""

from __future__ import annotations

import hashlib

NOISE_RULE = "torch.Generator(cpu).manual_seed(int.from_bytes(sha256(f'{seed}/{draw}/{i}')[:8], 'big') >> 1)"
KID_SUBSET_RULE = "numpy.random.RandomState(int.from_bytes(sha256(f'kid/{seed}/{draw}')[:4], 'big'))"


def _hashed(text: str, num_bytes: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("ascii")).digest()[:num_bytes], "big")


def image_noise_seed(seed: int, draw: int, index: int) -> int:
    """The generator seed (in [0, 2**63)) of image ``index`` of draw ``draw`` with base seed ``seed``."""
    return _hashed(f"{seed}/{draw}/{index}", 8) >> 1


def image_noise_seeds(seed: int, draw: int, indices: range | list[int]) -> list[int]:
    """:func:`image_noise_seed` of each index."""
    return [image_noise_seed(seed, draw, i) for i in indices]


def kid_subset_seed(seed: int, draw: int) -> int:
    """The ``numpy.random.RandomState`` seed (in [0, 2**32)) of KID's subsets of draw ``draw``."""
    return _hashed(f"kid/{seed}/{draw}", 4)
