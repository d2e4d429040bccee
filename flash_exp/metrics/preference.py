"""Preference scores of generated images: ImageReward, PickScore, HPSv2.1 and the LAION aesthetic score.

Each is a metric of :data:`~flash_exp.metrics.registry.METRICS` (its direction, pinned settings, the
files of its weights directory ``metric_weights.<name>`` and how to fetch them are declared there);
:func:`build` returns its :class:`PreferenceMetric`, whose ``describe()`` adds the sha256 of each weight
file and whose ``score()`` is the mean over the draw's images. A :class:`PreferenceScorer` reads its
weights directory (the layout of the metric's ``files``) and scores images: one float per image,
image ``i`` scored with prompt ``i``.

The reference packages ``image-reward`` and ``hpsv2`` pin timm 0.6.13 and pytest 7.2.0, which our
pins exclude; the published weights are therefore loaded with the libraries their authors used:

* ``pickscore``: transformers ``CLIPModel`` ``yuvalkirstain/PickScore_v1`` with the processor of
  ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``; ``logit_scale.exp() * cos(image, text)`` (PickScore README).
* ``hpsv21``: open_clip ViT-H-14 with the state dict of ``xswu/HPSv2`` ``HPS_v2.1_compressed.pt``;
  ``cos(image, text)`` (hpsv2 ``img_score.score``).
* ``aesthetic``: open_clip ViT-L-14 (OpenAI weights), L2-normalised image embedding through the
  improved-aesthetic-predictor MLP ``sac+logos+ava1-l14-linearMSE.pth`` (its ``simple_inference.py``).
* ``imagereward``: the BLIP ViT-L/16 image encoder and BERT cross-attention text encoder of
  ``THUDM/ImageReward`` ``ImageReward.pt`` in transformers' ``BlipVisionModel`` / ``BlipTextModel``,
  the [CLS] feature through ImageReward's MLP, standardised by its published mean and std.

Weights are read from the local directory only (``python -m flash_exp.prefetch`` assembles it).
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from flash_exp.metrics.hashing import file_sha256
from flash_exp.metrics.registry import (
    AESTHETIC_FILE,
    HPS_FILE,
    IMAGEREWARD_CONFIG,
    IMAGEREWARD_FILE,
    IMAGEREWARD_MEAN,
    IMAGEREWARD_STD,
    OPEN_CLIP_WEIGHTS,
    Metric,
    MetricContext,
    MetricScorer,
    ScoreInput,
)

Images = Sequence[Image.Image] | torch.Tensor

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def to_pil(images: Images) -> list[Image.Image]:
    """PIL RGB images from PIL images or a uint8 tensor (N, 3, H, W)."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: a uint8 tensor (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        return [Image.fromarray(a) for a in images.permute(0, 2, 3, 1).cpu().numpy()]
    return [image.convert("RGB") for image in images]


def clip_transform(size: int):
    """The CLIP evaluation transform of ``size`` pixels (OpenAI mean and std) as torchvision composes it."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(OPENAI_MEAN, OPENAI_STD)])


def _open_clip_file(directory: Path) -> Path:
    """The open_clip weights file in ``directory`` (safetensors preferred, as open_clip does)."""
    found = next((directory / n for n in OPEN_CLIP_WEIGHTS if (directory / n).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{directory} holds none of {', '.join(OPEN_CLIP_WEIGHTS)}")
    return found


class PreferenceScorer(abc.ABC):
    """One preference score from the weights ``directory`` (the layout of its registry entry's files):
    per-image floats from images and their prompts; higher is better."""

    name: str = ""

    def __init__(self, directory: Path, device: str | torch.device = "cpu", batch_size: int = 16) -> None:
        self.directory = Path(directory).expanduser()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self._model: Any = None

    @abc.abstractmethod
    def _load(self) -> Any:
        """The model(s), in eval mode on :attr:`device`."""

    @abc.abstractmethod
    def _score_batch(self, model: Any, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        """Scores (B,) of one batch."""

    @torch.no_grad()
    def score(self, images: Images, prompts: Sequence[str]) -> np.ndarray:
        """Score of image ``i`` with ``prompts[i]``: float64 array (N,)."""
        pil = to_pil(images)
        if len(pil) != len(prompts):
            raise ValueError(f"{len(pil)} images but {len(prompts)} prompts")
        if self._model is None:
            self._model = self._load()
        out = [self._score_batch(self._model, pil[s:s + self.batch_size], list(prompts[s:s + self.batch_size]))
               .float().cpu().double().numpy() for s in range(0, len(pil), self.batch_size)]
        return np.concatenate(out) if out else np.zeros(0)


class PickScore(PreferenceScorer):
    """PickScore_v1: ``logit_scale.exp() * cos(image, text)`` of a transformers CLIPModel (about 18 to 23);
    ``directory/model`` holds the model, ``directory/processor`` its processor."""

    name = "pickscore"

    def _load(self) -> Any:
        from transformers import AutoProcessor, CLIPModel

        model = CLIPModel.from_pretrained(self.directory / "model").eval().to(self.device)
        return model, AutoProcessor.from_pretrained(self.directory / "processor")

    def _score_batch(self, model: Any, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        clip, processor = model
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        text = processor(text=prompts, padding=True, truncation=True, max_length=77, return_tensors="pt").to(self.device)
        image_emb = _features(clip.get_image_features(pixel_values=pixels))
        text_emb = _features(clip.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"]))
        return clip.logit_scale.exp() * F.cosine_similarity(image_emb, text_emb, dim=-1)


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor, or a pooled output in transformers 5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HPSv21(PreferenceScorer):
    """HPSv2.1: ``cos(image, text)`` of open_clip ``model`` (ViT-H-14) with the HPSv2.1 state dict
    ``directory/HPS_v2.1_compressed.pt`` (about 0.2 to 0.35)."""

    name = "hpsv21"

    def __init__(self, directory: Path, model: str = "ViT-H-14", **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.model = model

    def _load(self) -> Any:
        import open_clip

        model = open_clip.create_model(self.model, pretrained=None, device=self.device)
        state = torch.load(self.directory / HPS_FILE, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state))
        return model.eval(), clip_transform(model.visual.image_size[0]), open_clip.get_tokenizer(self.model)

    def _score_batch(self, model: Any, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        clip, transform, tokenizer = model
        pixels = torch.stack([transform(image) for image in images]).to(self.device)
        image_emb = clip.encode_image(pixels).float()
        text_emb = clip.encode_text(tokenizer(prompts).to(self.device)).float()
        return F.cosine_similarity(image_emb, text_emb, dim=-1)


def linear_mlp(weights: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    """The MLP of the aesthetic predictor and of ImageReward, from a state dict with keys
    ``layers.{0,2,4,6,7}.{weight,bias}``: linear layers 768 -> 1024 -> 128 -> 64 -> 16 -> 1 with
    dropouts at 1, 3, 5 and no activation (as published)."""
    sizes = [weights[f"layers.{i}.weight"].shape for i in (0, 2, 4, 6, 7)]
    linear = [torch.nn.Linear(s[1], s[0]) for s in sizes]
    mlp = torch.nn.Sequential(linear[0], torch.nn.Dropout(0.2), linear[1], torch.nn.Dropout(0.2), linear[2],
                              torch.nn.Dropout(0.1), linear[3], linear[4])
    mlp.load_state_dict({k.removeprefix("layers."): v for k, v in weights.items() if k.startswith("layers.")})
    return mlp.eval()


class Aesthetic(PreferenceScorer):
    """LAION improved aesthetic predictor: MLP ``directory/sac+logos+ava1-l14-linearMSE.pth`` of the
    L2-normalised image embedding of open_clip ``model`` (ViT-L-14, its ``tag`` weights in
    ``directory/open_clip_model.safetensors``) (about 1 to 10)."""

    name = "aesthetic"

    def __init__(self, directory: Path, model: str = "ViT-L-14", tag: str = "openai", **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.model, self.tag = model, tag

    def _load(self) -> Any:
        import open_clip

        from flash_exp.metrics.clip_score import tag_settings

        clip = open_clip.create_model(self.model, pretrained=str(_open_clip_file(self.directory)), device=self.device,
                                      force_quick_gelu=tag_settings(self.model, self.tag)["force_quick_gelu"])
        mlp = linear_mlp(torch.load(self.directory / AESTHETIC_FILE, map_location="cpu", weights_only=True))
        return clip.eval(), clip_transform(clip.visual.image_size[0]), mlp.to(self.device)

    def _score_batch(self, model: Any, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        clip, transform, mlp = model
        pixels = torch.stack([transform(image) for image in images]).to(self.device)
        return mlp(F.normalize(clip.encode_image(pixels).float(), dim=-1))[:, 0]


def blip_vision_keys(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """BLIP's ViT state dict (timm names under ``prefix``) in transformers ``BlipVisionModel`` names."""
    renames = [("cls_token", "embeddings.class_embedding"), ("pos_embed", "embeddings.position_embedding"),
               ("patch_embed.proj", "embeddings.patch_embedding"), ("blocks.", "encoder.layers."),
               (".norm1.", ".layer_norm1."), (".norm2.", ".layer_norm2."), (".attn.qkv.", ".self_attn.qkv."),
               (".attn.proj.", ".self_attn.projection."), ("norm.", "post_layernorm.")]
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        for old, new in renames:
            if old == "norm." and not name.startswith("norm."):
                continue
            name = name.replace(old, new)
        out[name] = value
    return out


class ImageReward(PreferenceScorer):
    """ImageReward-v1.0: BLIP ViT-L/16 + BERT cross-attention, [CLS] through the MLP, standardised (about
    -2 to 2); ``directory`` holds ``ImageReward.pt``, ``med_config.json`` and the BERT ``tokenizer/``."""

    name = "imagereward"

    def __init__(self, directory: Path, vision_heads: int = 16, **kwargs: Any) -> None:
        super().__init__(directory, **kwargs)
        self.vision_heads = vision_heads

    def _load(self) -> Any:
        from transformers import BertTokenizer, BlipTextConfig, BlipVisionConfig
        from transformers.models.blip.modeling_blip import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        state = torch.load(self.directory / IMAGEREWARD_FILE, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        vision_state = blip_vision_keys(state, "blip.visual_encoder.")
        width = vision_state["embeddings.class_embedding"].shape[-1]
        patch = vision_state["embeddings.patch_embedding.weight"].shape[-1]
        tokens = vision_state["embeddings.position_embedding"].shape[1] - 1
        depth = 1 + max(int(k.split(".")[2]) for k in vision_state if k.startswith("encoder.layers."))
        vision = BlipVisionModel(BlipVisionConfig(
            hidden_size=width, intermediate_size=vision_state["encoder.layers.0.mlp.fc1.weight"].shape[0],
            num_hidden_layers=depth, num_attention_heads=self.vision_heads, patch_size=patch,
            image_size=patch * round(tokens ** 0.5), layer_norm_eps=1e-6, hidden_act="gelu"))
        _load_exact(vision, vision_state, "BLIP image encoder")
        med = json.loads((self.directory / IMAGEREWARD_CONFIG).read_text())
        text = BlipTextModel(BlipTextConfig(
            vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], num_hidden_layers=med["num_hidden_layers"],
            num_attention_heads=med["num_attention_heads"], intermediate_size=med["intermediate_size"],
            max_position_embeddings=med["max_position_embeddings"], layer_norm_eps=med["layer_norm_eps"],
            hidden_act=med["hidden_act"], encoder_hidden_size=width), add_pooling_layer=False)
        prefix = "blip.text_encoder."
        _load_exact(text, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, "BLIP text encoder")
        mlp = linear_mlp({k.removeprefix("mlp."): v for k, v in state.items() if k.startswith("mlp.")})
        tokenizer = BertTokenizer.from_pretrained(self.directory / "tokenizer")
        return (vision.eval().to(self.device), text.eval().to(self.device), mlp.to(self.device), tokenizer,
                clip_transform(vision.config.image_size))

    def _score_batch(self, model: Any, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        vision, text, mlp, tokenizer, transform = model
        pixels = torch.stack([transform(image) for image in images]).to(self.device)
        image_embeds = vision(pixel_values=pixels).last_hidden_state
        tokens = tokenizer(prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        out = text(input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device),
                   encoder_hidden_states=image_embeds,
                   encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device))
        rewards = mlp(out.last_hidden_state[:, 0, :].float())[:, 0]
        return (rewards - IMAGEREWARD_MEAN) / IMAGEREWARD_STD


def _load_exact(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module``; every parameter must come from it (buffers such as position ids may not)."""
    missing, _ = module.load_state_dict(state, strict=False)
    params = {name for name, _ in module.named_parameters()}
    if missing_params := sorted(set(missing) & params):
        raise ValueError(f"{what}: the checkpoint lacks {', '.join(missing_params[:5])}")


SCORERS: dict[str, type[PreferenceScorer]] = {c.name: c for c in (ImageReward, PickScore, HPSv21, Aesthetic)}


class PreferenceMetric(MetricScorer):
    """A preference score in the evaluation: the mean over a draw's images, each scored with its prompt
    on the PNG as generated (the model's own preprocessing)."""

    def __init__(self, metric: Metric, scorer: PreferenceScorer, memo_dir: Path | None = None) -> None:
        self.metric, self.scorer, self.memo_dir = metric, scorer, memo_dir

    def describe(self) -> dict[str, Any]:
        """The pinned settings and the sha256 of each weight file (keyed by its path in the directory)."""
        directory = self.scorer.directory
        digests = {}
        for weight in self.metric.files:
            path = weight.path(directory)
            if path is not None:
                digests[str(path.relative_to(directory))] = file_sha256(path, self.memo_dir)
        return {**self.metric.pinned, "weights_sha256": digests}

    def score(self, batch: ScoreInput) -> dict[str, float | None]:
        scores = []
        for start in range(0, len(batch.files), batch.batch_size):
            images = []
            for path in batch.files[start:start + batch.batch_size]:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            scores.append(self.scorer.score(images, batch.prompts[start:start + batch.batch_size]))
        return {self.metric.name: float(np.mean(np.concatenate(scores)))}


def build(metric: Metric, context: MetricContext) -> PreferenceMetric:
    scorer = SCORERS[metric.name](Path(str(context.weights)), device=context.device)
    return PreferenceMetric(metric, scorer, context.cache_dir)
