"""Shared fixtures: tiny models saved to disk, composed configs, tiny webdataset shards."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# the test models are tiny: one thread avoids OpenMP spin-waits when the other core is busy
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_sd_dir):
    """``tiny_dir(name)``: the saved tiny pipeline directory of a backbone config name (built once)."""
    from tests import tiny_models

    built: dict[str, Path] = {"sd15": tiny_sd_dir, "toy": tiny_sd_dir}
    builders = {"sdxl": tiny_models.build_tiny_sdxl, "pixart": tiny_models.build_tiny_pixart,
                "sd3": tiny_models.build_tiny_sd3,
                "sd3_t5": lambda p: tiny_models.build_tiny_sd3(p, with_t5=True),
                "sd35": lambda p: tiny_models.build_tiny_sd3(p, mmdit_x=True),
                "flux": tiny_models.build_tiny_flux,
                "flux_schnell": lambda p: tiny_models.build_tiny_flux(p, guidance_embeds=False)}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = builders[name](tmp_path_factory.mktemp(f"tiny-{name}") / "pipe")
        return built[name]

    return get


def write_shard(path: Path, samples: list[dict]) -> Path:
    """A webdataset tar from dicts {key, image (PIL) | jpg (bytes), json (dict | bytes)}."""
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for s in samples:
            out = {"__key__": s["key"]}
            if "image" in s:
                buf = io.BytesIO()
                s["image"].save(buf, format="JPEG")
                out["jpg"] = buf.getvalue()
            if "jpg" in s:
                out["jpg"] = s["jpg"]
            if "json" in s:
                out["json"] = s["json"] if isinstance(s["json"], bytes) else json.dumps(s["json"]).encode()
            sink.write(out)
    return path


def solid_samples(n: int, start: int = 0, size: int = 32) -> list[dict]:
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
    names = list(colours)
    out = []
    for i in range(start, start + n):
        name = names[i % 3]
        out.append({"key": f"{i:06d}", "image": Image.new("RGB", (size, size), colours[name]),
                    "json": {"caption": f"a {name} square", "aesthetic_score": 5.0 + (i % 4)}})
    return out


@pytest.fixture
def tiny_shards(tmp_path) -> list[str]:
    return [str(write_shard(tmp_path / f"train-{i}.tar", solid_samples(24, 24 * i))) for i in range(2)]


@pytest.fixture
def unhandled_sigterms() -> list[int]:
    """The SIGTERMs that reached this test process's own handler (a run handles its own while it runs):
    recorded instead of ending pytest."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


def compose(overrides: list[str]):
    """The training config composed in-process, as `python -m flash_exp.train <overrides>` would."""
    from flash_exp.config import compose

    return compose(overrides)
