"""Preference scorers against their published formulas, on tiny stand-ins of the same architectures, and
their registry entries: direction, weights directory, what a missing file says.

The reference packages ``image-reward`` and ``hpsv2`` do not install beside our pins, so each reference
here is the published scoring code written out: PickScore's README (transformers CLIP), hpsv2's
``img_score`` (open_clip), improved-aesthetic-predictor's ``simple_inference.py`` (its MLP as plain
matrix products) and ImageReward's ``score`` with BLIP's ViT and BERT cross-attention written as
tensor operations on the original checkpoint names.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T
from transformers import BertTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from flash_exp.metrics.preference import SCORERS, Aesthetic, HPSv21, ImageReward, PickScore, PreferenceMetric
from flash_exp.metrics.registry import IMAGEREWARD_MEAN, IMAGEREWARD_STD, METRICS, MetricUnavailable
from tests.tiny_models import tiny_clip_tokenizer

PROMPTS = ["red circle", "a blue square on green", "yellow triangle", "dog"]
TINY_CLIP_CONFIG = {
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def images(n: int = 4, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 32), (32, 48), (64, 64), (36, 36)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


def reference_transform(size: int) -> T.Compose:
    """The CLIP/BLIP evaluation transform as the reference code composes it."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                      lambda im: im.convert("RGB"), T.ToTensor(), T.Normalize(MEAN, STD)])


def tiny_open_clip(directory: Path, name: str, embed_dim: int = 16) -> open_clip.CLIP:
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / f"{name}.json"
    config.write_text(json.dumps({**TINY_CLIP_CONFIG, "embed_dim": embed_dim}))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    return open_clip.create_model(name, pretrained=None).eval()


PREFERENCE = ["imagereward", "pickscore", "hpsv21", "aesthetic"]


def test_each_scorer_is_a_registry_metric_with_its_weights_key_and_higher_is_better():
    from omegaconf import OmegaConf

    from flash_exp.evaluation.settings import EvaluateConfig
    from flash_exp.leaderboard.cells import SCORE_LABELS
    from tests.fixtures_eval import REPO

    yaml_weights = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "evaluate.yaml")["metric_weights"])
    schema_weights = EvaluateConfig.__dataclass_fields__["metric_weights"].default_factory()
    assert sorted(SCORERS) == sorted(PREFERENCE)
    for name in PREFERENCE:
        metric = METRICS[name]
        assert metric.scores == {name: "higher"} and metric.weights == name
        assert metric.package is None and metric.extra is None  # core dependencies only
        assert metric.build == "flash_exp.metrics.preference:build" and metric.files
        assert f"FLASH_EXP_{name.upper()}_WEIGHTS" in yaml_weights[name]
        assert f"FLASH_EXP_{name.upper()}_WEIGHTS" in schema_weights[name]
        assert name in SCORE_LABELS


def test_pickscore_matches_the_published_formula(tmp_path):
    torch.manual_seed(0)
    tokenizer = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer) + 4, "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16, logit_scale_init_value=math.log(1 / 0.07))
    CLIPModel(config).save_pretrained(tmp_path / "model")
    tokenizer.model_max_length = 77
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(tmp_path / "processor")

    ours = PickScore(tmp_path, batch_size=3)
    got = ours.score(images(), PROMPTS)

    # PickScore README: normalised embeddings, logit_scale.exp() * text_embs @ image_embs.T
    model = CLIPModel.from_pretrained(tmp_path / "model").eval()
    proc = CLIPProcessor.from_pretrained(tmp_path / "processor")
    expected = []
    with torch.no_grad():
        for image, prompt in zip(images(), PROMPTS, strict=True):
            pixels = proc(images=[image], return_tensors="pt")["pixel_values"]
            text = proc(text=[prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
            image_embs = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
            text_embs = model.text_projection(model.text_model(**text).pooler_output)
            image_embs = image_embs / torch.norm(image_embs, dim=-1, keepdim=True)
            text_embs = text_embs / torch.norm(text_embs, dim=-1, keepdim=True)
            expected.append((model.logit_scale.exp() * (text_embs @ image_embs.T)[0])[0].item())
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    pinned = PreferenceMetric(METRICS["pickscore"], ours).describe()
    weights = (tmp_path / "model" / "model.safetensors").read_bytes()
    assert pinned["weights_sha256"]["model/model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert pinned["model"] == "yuvalkirstain/PickScore_v1"


def test_hpsv21_matches_hpsv2_img_score(tmp_path):
    model = tiny_open_clip(tmp_path, "tiny-hps")
    weights = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": model.state_dict()}, weights)

    got = HPSv21(tmp_path, model="tiny-hps", batch_size=3).score(images(), PROMPTS)

    # hpsv2 img_score.score: normalised features of model(image, text), diagonal of image @ text.T
    tokenizer = open_clip.get_tokenizer("tiny-hps")
    with torch.no_grad():
        pixels = torch.stack([reference_transform(32)(im) for im in images()])
        out = model(pixels, tokenizer(PROMPTS))
        image_features, text_features = out[0], out[1]
        expected = torch.diagonal(image_features @ text_features.T).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_aesthetic_matches_the_improved_predictor(tmp_path):
    model = tiny_open_clip(tmp_path, "tiny-aes", embed_dim=24)
    clip_file = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), clip_file)
    torch.manual_seed(1)
    sizes = [(24, 32), (32, 8), (8, 6), (6, 4), (4, 1)]  # (in, out) of layers 0, 2, 4, 6, 7
    mlp = {}
    for index, (fan_in, fan_out) in zip((0, 2, 4, 6, 7), sizes, strict=True):
        mlp[f"layers.{index}.weight"] = torch.randn(fan_out, fan_in) / fan_in ** 0.5
        mlp[f"layers.{index}.bias"] = torch.randn(fan_out)
    mlp_file = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(mlp, mlp_file)

    got = Aesthetic(tmp_path, model="tiny-aes", batch_size=3).score(images(), PROMPTS)

    # simple_inference.py: numpy L2 normalisation of encode_image, then the MLP (linear layers, no activation)
    with torch.no_grad():
        features = model.encode_image(torch.stack([reference_transform(32)(im) for im in images()])).numpy()
    x = features / np.linalg.norm(features, axis=-1, keepdims=True)
    for index in (0, 2, 4, 6, 7):
        x = x @ mlp[f"layers.{index}.weight"].numpy().T + mlp[f"layers.{index}.bias"].numpy()
    np.testing.assert_allclose(got, x[:, 0], atol=1e-5, rtol=0)


def test_score_takes_a_uint8_tensor_like_pil_images(tmp_path):
    model = tiny_open_clip(tmp_path, "tiny-hps2")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "HPS_v2.1_compressed.pt")
    scorer = HPSv21(tmp_path, model="tiny-hps2")
    tensor = torch.from_numpy(np.stack([np.asarray(images()[2])] * 2)).permute(0, 3, 1, 2)
    np.testing.assert_allclose(scorer.score(tensor, PROMPTS[:2]), scorer.score([images()[2]] * 2, PROMPTS[:2]),
                               atol=1e-6)
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        scorer.score(tensor, PROMPTS[:1])


# --- ImageReward: BLIP ViT and BERT cross-attention as tensor operations on the original names ---

VISION = {"width": 32, "depth": 2, "heads": 2, "patch": 8, "size": 32}
MED = {"vocab_size": 0, "hidden_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 40,
       "max_position_embeddings": 40, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "encoder_width": 32}


def tiny_bert_tokenizer(directory: Path) -> BertTokenizer:
    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for p in PROMPTS for w in p.split()} | {"green", "cat"})]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(str(directory / "vocab.txt"))
    tokenizer.save_pretrained(directory)
    return tokenizer


def blip_checkpoint(vocab: int) -> dict[str, torch.Tensor]:
    """Random weights under ImageReward.pt's names (blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    d, h, e = VISION["width"], MED["hidden_size"], MED["intermediate_size"]
    n = (VISION["size"] // VISION["patch"]) ** 2
    s = {"blip.visual_encoder.cls_token": r(1, 1, d), "blip.visual_encoder.pos_embed": r(1, n + 1, d),
         "blip.visual_encoder.patch_embed.proj.weight": r(d, 3, VISION["patch"], VISION["patch"], scale=0.05),
         "blip.visual_encoder.patch_embed.proj.bias": r(d), "blip.visual_encoder.norm.weight": 1 + r(d),
         "blip.visual_encoder.norm.bias": r(d)}
    for i in range(VISION["depth"]):
        b = f"blip.visual_encoder.blocks.{i}."
        s |= {b + "norm1.weight": 1 + r(d), b + "norm1.bias": r(d), b + "attn.qkv.weight": r(3 * d, d),
              b + "attn.qkv.bias": r(3 * d), b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
              b + "norm2.weight": 1 + r(d), b + "norm2.bias": r(d), b + "mlp.fc1.weight": r(4 * d, d),
              b + "mlp.fc1.bias": r(4 * d), b + "mlp.fc2.weight": r(d, 4 * d), b + "mlp.fc2.bias": r(d)}
    t = "blip.text_encoder."
    s |= {t + "embeddings.word_embeddings.weight": r(vocab, h), t + "embeddings.position_embeddings.weight":
          r(MED["max_position_embeddings"], h), t + "embeddings.LayerNorm.weight": 1 + r(h),
          t + "embeddings.LayerNorm.bias": r(h)}
    for i in range(MED["num_hidden_layers"]):
        b = f"{t}encoder.layer.{i}."
        for block, kv in (("attention", h), ("crossattention", d)):
            s |= {f"{b}{block}.self.query.weight": r(h, h), f"{b}{block}.self.query.bias": r(h),
                  f"{b}{block}.self.key.weight": r(h, kv), f"{b}{block}.self.key.bias": r(h),
                  f"{b}{block}.self.value.weight": r(h, kv), f"{b}{block}.self.value.bias": r(h),
                  f"{b}{block}.output.dense.weight": r(h, h), f"{b}{block}.output.dense.bias": r(h),
                  f"{b}{block}.output.LayerNorm.weight": 1 + r(h), f"{b}{block}.output.LayerNorm.bias": r(h)}
        s |= {b + "intermediate.dense.weight": r(e, h), b + "intermediate.dense.bias": r(e),
              b + "output.dense.weight": r(h, e), b + "output.dense.bias": r(h),
              b + "output.LayerNorm.weight": 1 + r(h), b + "output.LayerNorm.bias": r(h)}
    for index, (fan_in, fan_out) in zip((0, 2, 4, 6, 7), [(h, 32), (32, 8), (8, 6), (6, 4), (4, 1)], strict=True):
        s[f"mlp.layers.{index}.weight"] = r(fan_out, fan_in, scale=fan_in ** -0.5)
        s[f"mlp.layers.{index}.bias"] = r(fan_out)
    s["blip.vision_proj.weight"] = r(8, d)  # BLIP_Pretrain keeps its projections; ImageReward.score does not use them
    return s


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None):
    b, n, d = q.shape
    split = [x.reshape(b, x.shape[1], heads, d // heads).transpose(1, 2) for x in (q, k, v)]
    logits = split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        logits = logits + (1.0 - mask[:, None, None, :].float()) * -10000.0
    return (logits.softmax(-1) @ split[2]).transpose(1, 2).reshape(b, n, d)


def blip_vit(s: dict[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    """BLIP's VisionTransformer.forward (timm ViT, pre-norm, eps 1e-6, exact GELU)."""
    p = "blip.visual_encoder."
    d = VISION["width"]
    x = F.conv2d(pixels, s[p + "patch_embed.proj.weight"], s[p + "patch_embed.proj.bias"], stride=VISION["patch"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([s[p + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + s[p + "pos_embed"]
    for i in range(VISION["depth"]):
        b = f"{p}blocks.{i}."
        y = F.layer_norm(x, (d,), s[b + "norm1.weight"], s[b + "norm1.bias"], 1e-6)
        q, k, v = F.linear(y, s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"]).chunk(3, dim=-1)
        x = x + F.linear(attention(q, k, v, VISION["heads"]), s[b + "attn.proj.weight"], s[b + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), s[b + "norm2.weight"], s[b + "norm2.bias"], 1e-6)
        x = x + F.linear(F.gelu(F.linear(y, s[b + "mlp.fc1.weight"], s[b + "mlp.fc1.bias"])),
                         s[b + "mlp.fc2.weight"], s[b + "mlp.fc2.bias"])
    return F.layer_norm(x, (d,), s[p + "norm.weight"], s[p + "norm.bias"], 1e-6)


def blip_text(s: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """BLIP med.BertModel in multimodal mode: post-norm BERT layers with cross-attention to the image."""
    t, h, eps = "blip.text_encoder.", MED["hidden_size"], MED["layer_norm_eps"]

    def ln(x, name):
        return F.layer_norm(x, (h,), s[name + ".weight"], s[name + ".bias"], eps)

    def lin(x, name):
        return F.linear(x, s[name + ".weight"], s[name + ".bias"])

    x = s[t + "embeddings.word_embeddings.weight"][ids] + s[t + "embeddings.position_embeddings.weight"][:ids.shape[1]]
    x = ln(x, t + "embeddings.LayerNorm")
    for i in range(MED["num_hidden_layers"]):
        b = f"{t}encoder.layer.{i}."
        for block, kv, kv_mask in (("attention", x, mask), ("crossattention", image, None)):
            a = f"{b}{block}."
            out = attention(lin(x, a + "self.query"), lin(kv, a + "self.key"), lin(kv, a + "self.value"),
                            MED["num_attention_heads"], kv_mask)
            x = ln(lin(out, a + "output.dense") + x, a + "output.LayerNorm")
        x = ln(lin(F.gelu(lin(x, b + "intermediate.dense")), b + "output.dense") + x, b + "output.LayerNorm")
    return x


def test_imagereward_matches_blip_written_out(tmp_path):
    tokenizer = tiny_bert_tokenizer(tmp_path / "tokenizer")
    state = blip_checkpoint(len(tokenizer) + 2)  # BLIP adds [DEC] and [ENC] to the vocabulary
    torch.save(state, tmp_path / "ImageReward.pt")
    (tmp_path / "med_config.json").write_text(json.dumps({**MED, "vocab_size": len(tokenizer) + 2}))

    scorer = ImageReward(tmp_path, vision_heads=VISION["heads"], batch_size=3)
    got = scorer.score(images(), PROMPTS)

    # ImageReward.score: tokens padded to 35, [CLS] of the text encoder over the image, MLP, (r - mean) / std
    expected = []
    with torch.no_grad():
        for image, prompt in zip(images(), PROMPTS, strict=True):
            tokens = tokenizer(prompt, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
            image_embeds = blip_vit(state, reference_transform(VISION["size"])(image)[None])
            cls = blip_text(state, tokens.input_ids, tokens.attention_mask, image_embeds)[:, 0, :]
            for index in (0, 2, 4, 6, 7):
                cls = F.linear(cls, state[f"mlp.layers.{index}.weight"], state[f"mlp.layers.{index}.bias"])
            expected.append(((cls - IMAGEREWARD_MEAN) / IMAGEREWARD_STD).item())
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, fetch", [
    ("imagereward", "hf download THUDM/ImageReward ImageReward.pt med_config.json --local-dir {dir}"),
    ("pickscore", "hf download yuvalkirstain/PickScore_v1 config.json model.safetensors --local-dir {dir}/model"),
    ("hpsv21", "hf download xswu/HPSv2 HPS_v2.1_compressed.pt --local-dir {dir}"),
    ("aesthetic", "-o {dir}/sac+logos+ava1-l14-linearMSE.pth https://github.com/christophschuhmann/"
                  "improved-aesthetic-predictor/raw/main/sac+logos+ava1-l14-linearMSE.pth"),
])
def test_missing_weights_name_the_key_and_what_to_fetch(name, fetch, tmp_path):
    with pytest.raises(MetricUnavailable, match=rf"metric_weights\.{name}=.*does not exist") as err:
        METRICS[name].check_available(str(tmp_path / "absent"))
    assert "python -m flash_exp.prefetch" in str(err.value)
    assert fetch.format(dir=tmp_path / "absent") in str(err.value)  # the commands fill the configured directory
    assert "pip install" not in str(err.value)  # no package beyond the core dependencies
    with pytest.raises(MetricUnavailable, match=rf"metric_weights\.{name}=.* lacks "):
        METRICS[name].check_available(str(tmp_path))  # the directory exists, its files do not


def test_a_weights_directory_is_complete_with_either_alternative_file(tmp_path):
    metric = METRICS["pickscore"]
    for weight in metric.files:
        (tmp_path / weight.folder).mkdir(exist_ok=True)
        (tmp_path / weight.folder / weight.names[-1]).write_bytes(b"w")  # pytorch_model.bin, not safetensors
    metric.check_available(str(tmp_path))
    (tmp_path / "processor" / "merges.txt").unlink()
    with pytest.raises(MetricUnavailable, match=r"lacks processor/merges\.txt;"):
        metric.check_available(str(tmp_path))
