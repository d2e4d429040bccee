"""Training of the toy CLIP: a tiny open_clip model ("toy-clip") trained contrastively on the shapes captions.

It works on 32x32 images (its preprocess resizes and centre-crops any PIL image to 32x32) and
uses open_clip's standard BPE tokenizer (vocabulary 49408, context 16 tokens). Image and text
embeddings have ``TOY_CLIP_CONFIG["embed_dim"]`` (64) dimensions. Since the toy world has only
150 distinct captions, each training image is contrasted with all of them at every step. Loading the
trained model for scoring is :func:`flash_exp.metrics.toy_clip.load_toy_clip`.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from safetensors.torch import save_file
from torchvision.transforms.v2.functional import gaussian_blur
from tqdm import tqdm

from flash_exp.config.toy_paths import CLIP_CONFIG_FILE, CLIP_MODEL_NAME, CLIP_WEIGHTS_FILE
from flash_exp.metrics.toy_clip import register
from flash_exp.toyworld.dataset import ToyData

TOY_CLIP_CONFIG: dict = {
    "embed_dim": 64,
    # open_clip's ModifiedResNet: a stride-4 stem and four bottleneck stages take 32x32 down to 1x1
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 2.0},
}


def write_config(clip_dir: Path) -> Path:
    """Write TOY_CLIP_CONFIG to ``clip_dir/toy-clip.json`` and register it; returns the path."""
    clip_dir.mkdir(parents=True, exist_ok=True)
    path = clip_dir / CLIP_CONFIG_FILE
    path.write_text(json.dumps(TOY_CLIP_CONFIG, indent=2) + "\n")
    register(path)
    return path


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample training augmentation of float images in [0, 1], (B, 3, 32, 32): random
    horizontal flips and a random amount of Gaussian blur, so that the model also reads the
    softer images a generator produces."""
    batch = images.shape[0]
    flip = torch.rand(batch, generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    blurred = gaussian_blur(images, kernel_size=[3, 3], sigma=[1.0, 1.0])
    amount = torch.rand(batch, 1, 1, 1, generator=generator) * (torch.rand(batch, 1, 1, 1, generator=generator) < 0.5)
    return images + amount * (blurred - images)


def _caption_set_loss(image_features: torch.Tensor, caption_features: torch.Tensor, logit_scale: torch.Tensor,
                      labels: torch.Tensor) -> torch.Tensor:
    """InfoNCE of each image against the whole caption set (every other caption is a negative).

    ``image_features``: (B, D) and ``caption_features``: (C, D), both L2-normalised;
    ``labels``: (B,) index of each image's caption in the caption set.
    """
    return F.cross_entropy(logit_scale * image_features @ caption_features.t(), labels)


def train_toy_clip(
    data: ToyData, clip_dir: Path, steps: int, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
    progress_position: int = 0,
) -> Path:
    """Train toy-clip contrastively on ``data`` and save it under ``clip_dir``.

    ``progress_position`` is the line of its progress bar (for runs beside other bars).

    Writes ``toy-clip.json`` and ``open_clip_model.safetensors`` (float16); returns the weights path.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    write_config(clip_dir)
    model = open_clip.create_model(CLIP_MODEL_NAME, pretrained=None)
    tokenizer = open_clip.get_tokenizer(CLIP_MODEL_NAME)
    vocabulary = sorted(set(data.captions))
    caption_ids = torch.tensor([vocabulary.index(c) for c in data.captions])
    tokens = tokenizer(vocabulary)  # (C, 16): every distinct caption, encoded at each step
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    progress = tqdm(range(steps), desc="toy CLIP", unit="step", position=progress_position)
    for _ in progress:
        index = torch.randint(len(data), (batch_size,), generator=generator)
        images = (_augment(data.images[index].float() / 255.0, generator) - mean) / std
        labels = caption_ids[index]
        image_features, caption_features, logit_scale = model(images, tokens)
        loss = _caption_set_loss(image_features, caption_features, logit_scale, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        progress.set_postfix(loss=f"{loss.item():.3f}")

    weights = clip_dir / CLIP_WEIGHTS_FILE
    # stored in half precision to keep the shipped assets small; open_clip loads it into float32
    save_file({k: (v.half() if v.is_floating_point() else v).detach().contiguous()
               for k, v in model.state_dict().items()}, weights)
    return weights
