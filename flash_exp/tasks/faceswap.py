"""Face swapping: inpaint the face of a target image with the identity of a reference image.

The paper shows face swapping without details (paper-facts section 5); this is our design (README, "Tasks"):

- **Data.** A sample is a target image (``jpg``), its face box (json ``face_box``: [x0, y0, x1, y1] as
  fractions of the image) and a reference image of the *same* identity in another pose or setting
  (``ref.jpg``). Training is self-supervised: the face region of the target is masked out and the
  model must paint it back with the identity seen in the reference. At sampling time the reference
  comes from another identity: that is the swap.
- **Mask and image channels.** The face box grown by ``identity.mask_margin`` is the inpainting mask:
  ``[x_t, mask, masked_image_latents]`` exactly as :mod:`flash_exp.tasks.inpainting`, so the teacher's
  UNet is an inpainting UNet (9 input channels for SD1.5 / SDXL).
- **Identity.** The reference goes through a frozen CLIP image encoder
  (``CLIPVisionModelWithProjection``, ``<teacher>/image_encoder``) and a projection to N tokens of the
  UNet's cross-attention width (diffusers' ``ImageProjection``, ``<teacher>/image_projection``), the
  image-prompt path of IP-Adapter; the tokens are appended to the text tokens
  (:meth:`~flash_exp.backbones.base.Backbone.add_context_tokens`), so any SD-family UNet takes them
  without architectural change. The null condition keeps the mask and masked image and uses the
  projection of a zero image embedding (IP-Adapter's unconditional image prompt) with the null text.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from flash_exp.backbones.base import Backbone
from flash_exp.backbones.condition import Condition
from flash_exp.config import IdentityConfig, TaskConfig
from flash_exp.data.webdataset import image_to_tensor
from flash_exp.tasks.base import SampleTransform, Task, check_concat_channels
from flash_exp.tasks.inpainting import inpainting_concat, masked_pixels

ENCODER_DIR = "image_encoder"
PROJECTION_DIR = "image_projection"
PROJECTION_CONFIG = "config.json"
PROJECTION_WEIGHTS = "diffusion_pytorch_model.safetensors"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIPImageProcessor defaults
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def face_box_mask(box: list[float], size: int, margin: float) -> torch.Tensor:
    """(1, size, size) {0, 1}: the face box (fractions) grown by ``margin`` x its side on each edge."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    x0, x1 = max(0.0, x0 - dx), min(1.0, x1 + dx)
    y0, y1 = max(0.0, y0 - dy), min(1.0, y1 + dy)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    inside_y = (coords >= y0) & (coords <= y1)
    inside_x = (coords >= x0) & (coords <= x1)
    return (inside_y[:, None] & inside_x[None, :]).float()[None]


class FaceTransform(SampleTransform):
    """Reads ``face_box`` and the reference bytes; builds the face mask and the reference tensor."""

    def __init__(self, cfg: IdentityConfig):
        self.cfg = cfg

    def read(self, sample: dict, meta: dict) -> dict | None:
        box = meta.get(self.cfg.face_key)
        ref = sample.get(self.cfg.reference_key)
        if ref is None or not isinstance(box, list | tuple) or len(box) != 4:
            return None
        return {"face_box": [float(v) for v in box], "reference_bytes": ref}

    def __call__(self, item: dict, generator: torch.Generator) -> dict:
        with Image.open(io.BytesIO(item.pop("reference_bytes"))) as image:
            item["reference"] = image_to_tensor(image, self.cfg.reference_size)
        item["mask"] = face_box_mask(item.pop("face_box"), item["pixels"].shape[-1], self.cfg.mask_margin)
        return item


class IdentityProjection(nn.Module):
    """Image embedding (B, E) -> N identity tokens (B, N, D): diffusers' ``ImageProjection`` (linear +
    layer norm, IP-Adapter's image-prompt projection), saved as ``config.json`` + safetensors."""

    def __init__(self, image_embed_dim: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        from diffusers.models.embeddings import ImageProjection

        self.config = {"image_embed_dim": image_embed_dim, "cross_attention_dim": cross_attention_dim,
                       "num_tokens": num_tokens}
        self.proj = ImageProjection(image_embed_dim=image_embed_dim, cross_attention_dim=cross_attention_dim,
                                    num_image_text_embeds=num_tokens)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.proj(embeds)

    def save_pretrained(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / PROJECTION_CONFIG).write_text(json.dumps(self.config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / PROJECTION_WEIGHTS)

    @classmethod
    def from_pretrained(cls, directory: Path) -> IdentityProjection:
        from safetensors.torch import load_file

        directory = Path(directory)
        config = json.loads((directory / PROJECTION_CONFIG).read_text())
        module = cls(**config)
        module.load_state_dict(load_file(directory / PROJECTION_WEIGHTS))
        return module


def identity_dir(name: str) -> Path:
    """The local directory holding ``image_encoder/`` and ``image_projection/`` (hub ids resolved)."""
    from flash_exp.backbones.hub import TeacherNotFoundError, resolve_pretrained

    root = Path(resolve_pretrained(name))
    missing = [d for d in (ENCODER_DIR, PROJECTION_DIR) if not (root / d).is_dir()]
    if missing:
        raise TeacherNotFoundError(
            f"task.identity.pretrained={name!r} has no {' and no '.join(d + '/' for d in missing)}: a face-swap "
            "teacher directory holds the CLIP image encoder (image_encoder/) and its token projection "
            "(image_projection/) next to the inpainting UNet (see README 'Tasks')"
        )
    return root


class FaceswapTask(Task):
    name = "faceswap"
    has_ground_truth = True  # the target itself (self-supervised: same identity)

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        from transformers import CLIPVisionModelWithProjection

        if not cfg.identity.pretrained:
            raise ValueError("task.identity.pretrained is unset: the directory with image_encoder/ and image_projection/")
        root = identity_dir(cfg.identity.pretrained)
        self.image_encoder = CLIPVisionModelWithProjection.from_pretrained(root / ENCODER_DIR)
        self.image_projection = IdentityProjection.from_pretrained(root / PROJECTION_DIR)
        for module in (self.image_encoder, self.image_projection):
            module.requires_grad_(False)
            module.eval()
        self.register_buffer("clip_mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("clip_std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # the frozen encoder stays in eval mode
        super().train(mode)
        self.image_encoder.eval()
        self.image_projection.eval()
        return self

    @staticmethod
    def sample_transform(cfg: TaskConfig, resolution: int) -> SampleTransform:
        return FaceTransform(cfg.identity)

    @torch.no_grad()
    def identity_tokens(self, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity tokens of (B, 3, S, S) references in [-1, 1] and the unconditional tokens (zero embeds)."""
        x = ((reference.float() + 1) / 2 - self.clip_mean) / self.clip_std
        embeds = self.image_encoder(pixel_values=x.to(self.image_encoder.dtype)).image_embeds
        return self.image_projection(embeds), self.image_projection(torch.zeros_like(embeds))

    def add_condition(self, batch: dict, backbone: Backbone, latents: torch.Tensor, cond: Condition,
                      null: Condition) -> tuple[Condition, Condition]:
        concat = inpainting_concat(backbone, batch["pixels"], batch["mask"], latents.shape[-2:])
        check_concat_channels(self.name, backbone, concat.shape[1], "face mask + masked-target latents")
        tokens, null_tokens = self.identity_tokens(batch["reference"].to(latents.device))
        return (backbone.add_context_tokens(cond.with_concat(concat), tokens),
                backbone.add_context_tokens(null.with_concat(concat), null_tokens))

    # ------------------------------------------------------------------ grids
    def grid_batch(self, batch: dict) -> dict:
        """Each target gets the next sample's reference: the grid shows swaps, not reconstructions."""
        out = dict(batch)
        out["reference"] = batch["reference"].roll(1, dims=0)
        out["swapped"] = True
        return out

    def grid_inputs(self, batch: dict) -> list[tuple[str, torch.Tensor]]:
        from flash_exp.tasks.filters import resize

        size = batch["pixels"].shape[-1]
        return [("reference identity", resize(batch["reference"].float(), size)),
                ("masked target", masked_pixels(batch["pixels"], batch["mask"]))]

    def ground_truth(self, batch: dict) -> torch.Tensor | None:
        return None if batch.get("swapped") else batch["pixels"]

    def condition_metrics(self, images: torch.Tensor, batch: dict) -> dict[str, float]:
        from flash_exp.metrics.restoration import masked_psnr

        keep = 1.0 - batch["mask"].to(images)
        return {"psnr_unmasked": masked_psnr(images, (batch["pixels"].to(images) + 1) / 2, keep)}


__all__ = ["FaceTransform", "FaceswapTask", "IdentityProjection", "face_box_mask", "identity_dir"]
