"""Offline fixtures of the evaluation tests: a tiny Inception-shaped TorchScript file, tiny open_clip
models saved to disk, a COCO-format folder, toy-format shards and a training run with a LoRA export.

A test module loads them with ``pytest_plugins = ["tests.fixtures_eval"]``.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file
from torch import nn

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = "tiny-eval-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
WORDS = ["red", "green", "blue", "yellow", "circle", "square", "triangle", "dog", "cat", "kite"]


class TinyInceptionLayers(nn.Module):
    """(N, 3, 299, 299) normalised to about [-1, 1] -> (N, 2048, 1, 1), like Inception's ``layers``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=16, stride=16)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(128, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(torch.tanh(self.conv(x))).flatten(1)).view(-1, 2048, 1, 1)


class TinyInception(nn.Module):
    """The interface clean-fid's ``InceptionV3W`` uses: ``layers`` on normalised input, and a forward
    on [0, 255] images returning (N, 2048) features."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = TinyInceptionLayers()

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers((x - 128.0) / 128.0).view(-1, 2048)


class TinyFeatures(nn.Module):
    """A small random feature net for fast FID tests: (N, 3, S, S) in [0, 255] -> (N, dim)."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(48, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(x / 255.0).flatten(1))


def write_tiny_inception(directory: Path) -> Path:
    """Script :class:`TinyInception` (seed 0) and save it as ``directory/inception-2015-12-05.pt``."""
    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "inception-2015-12-05.pt"
    torch.jit.script(TinyInception().eval()).save(str(path))
    return path


def write_tiny_clip(directory: Path, name: str = TINY_CLIP) -> Path:
    """Register a tiny open_clip architecture ``name`` and save seeded random weights; returns the file."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None)
    weights = directory / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return weights


def write_toy_clip_dir(directory: Path) -> Path:
    """A toy-CLIP directory (config + random weights) in the toy world's layout."""
    from flash_exp.config.toy_paths import CLIP_MODEL_NAME, CLIP_WEIGHTS_FILE
    from flash_exp.toyworld.clip import write_config

    write_config(directory)
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(directory / CLIP_WEIGHTS_FILE))
    return directory


def random_images(directory: Path, count: int, seed: int = 0, sizes: tuple[tuple[int, int], ...] = ((32, 32),),
                  ext: str = "png") -> list[Path]:
    """``count`` seeded random RGB images of the given (width, height) sizes, cycled."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        path = directory / f"{i:06d}.{ext}"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


def write_coco(root: Path, split: str = "val2017", count: int = 12, seed: int = 0) -> Path:
    """A COCO-format caption set: ``annotations/captions_<split>.json`` + ``<split>/*.jpg`` (mixed sizes)."""
    rng = random.Random(seed)
    files = random_images(root / split, count, seed, sizes=((48, 32), (32, 40), (36, 36)), ext="jpg")
    images, annotations = [], []
    for i, path in enumerate(files):
        image_id = 1000 + 7 * i
        named = path.with_name(f"{image_id:012d}.jpg")
        path.rename(named)
        images.append({"id": image_id, "file_name": named.name, "width": 0, "height": 0})
        for _ in range(rng.randint(2, 5)):
            words = " ".join(rng.choice(WORDS) for _ in range(3))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "caption": f"a {words}\n"})
    ann = root / "annotations" / f"captions_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"images": images, "annotations": annotations}))
    return root


def write_toy_shards(directory: Path, count: int = 24) -> list[str]:
    """Held-out shards in the toy world's format: jpg + json{caption, aesthetic_score}, 32x32."""
    import webdataset as wds

    from flash_exp.metrics.images import CenterCropResize

    directory.mkdir(parents=True, exist_ok=True)
    colours = {"red": (215, 35, 35), "green": (40, 165, 60), "blue": (40, 75, 215)}
    shards = []
    for shard in range(2):
        path = directory / f"heldout-{shard:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for i in range(shard * count // 2, (shard + 1) * count // 2):
                name = list(colours)[i % 3]
                image = Image.new("RGB", (32, 32), (240, 240, 240))
                image.paste(colours[name], (8 + i % 5, 8, 20 + i % 5, 22))
                buffer = io.BytesIO()
                CenterCropResize(32).pil(image).save(buffer, format="JPEG")
                sink.write({"__key__": f"{i:06d}", "jpg": buffer.getvalue(),
                            "json": json.dumps({"caption": f"a {name} square on a white background",
                                                "aesthetic_score": 5.0}).encode()})
        shards.append(str(path))
    return shards


def compose_train(overrides: list[str]):
    """The training config composed in-process, as ``python -m flash_exp.train <overrides>`` would."""
    from flash_exp.config import compose

    return compose(overrides)


def compose_evaluate(overrides: list[str]):
    """``conf/evaluate.yaml`` composed in-process with ``overrides``."""
    from flash_exp.config import compose
    from flash_exp.evaluation import register_configs

    register_configs()
    return compose(overrides, config_name="evaluate")


def write_run(run_dir: Path, pretrained: Path, overrides: list[str] | None = None, lora_seed: int = 0) -> Path:
    """A finished training run: ``.hydra/{config,overrides}.yaml`` composed from the real training config
    (SD1.5 backbone on the tiny pipeline at 32 px) and ``export/pytorch_lora_weights.safetensors``."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    overrides = ["backbone=sd15", f"backbone.pretrained={pretrained}", "backbone.resolution=32",
                 "backbone.teacher_sampling.steps=2", *(overrides or [])]
    cfg = compose_train(overrides)
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), run_dir / ".hydra" / "overrides.yaml")
    unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet")
    torch.manual_seed(lora_seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    StableDiffusionPipeline.save_lora_weights(run_dir / "export", unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    return run_dir


@pytest.fixture(scope="session")
def tiny_inception(tmp_path_factory) -> Path:
    return write_tiny_inception(tmp_path_factory.mktemp("inception"))


@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def toy_clip_dir(tmp_path_factory) -> Path:
    return write_toy_clip_dir(tmp_path_factory.mktemp("toy-clip"))


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="session")
def toy_shards(tmp_path_factory) -> list[str]:
    return write_toy_shards(tmp_path_factory.mktemp("toy-shards"))


@pytest.fixture(scope="session")
def _tiny_run_template(tmp_path_factory, tiny_sd_dir) -> Path:
    return write_run(tmp_path_factory.mktemp("run-template") / "run", tiny_sd_dir)


@pytest.fixture
def tiny_run(tmp_path, _tiny_run_template) -> Path:
    """A finished run of the tiny SD pipeline at ``<tmp>/runs/tiny/2025-01-01_00-00-00`` (a fresh copy)."""
    return Path(shutil.copytree(_tiny_run_template, tmp_path / "runs" / "tiny" / "2025-01-01_00-00-00"))


def fake_coco(root, split, count, annotated=None):
    """``count`` empty image files in ``root/split`` and, when ``annotated`` is given, an annotation file
    listing that many of them (annotated > count: some listed images are absent)."""
    (root / split).mkdir(parents=True)
    for i in range(count):
        (root / split / f"COCO_{split}_{i:012d}.jpg").touch()
    if annotated is not None:
        (root / "annotations").mkdir(exist_ok=True)
        images = [{"id": i, "file_name": f"COCO_{split}_{i:012d}.jpg"} for i in range(annotated)]
        anns = [{"id": i, "image_id": i, "caption": "a cat"} for i in range(annotated)]
        (root / "annotations" / f"captions_{split}.json").write_text(json.dumps({"images": images,
                                                                               "annotations": anns}))
