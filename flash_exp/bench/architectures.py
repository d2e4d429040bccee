"""The paper backbones' real architectures with random weights, written as diffusers pipeline directories.

What to build is data: ``flash_exp/backbones/architectures/pipelines.json`` names, per backbone, its
pipeline class and each component's class and config file (the published ``config.json`` of the hub
repository, shipped beside it). Each model is built from its config with random weights, one at a time
(peak memory: the largest component), stored in bfloat16 with ``save_pretrained``; the directory's
``model_index.json`` is the one ``DiffusionPipeline.save_pretrained`` writes. Training then loads it
with ``backbone.pretrained=<directory>``, the path every teacher takes. No download.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

ARCHITECTURES = Path(__file__).resolve().parents[1] / "backbones" / "architectures"
PIPELINES_FILE = ARCHITECTURES / "pipelines.json"
TOKEN_WORDS = "a photo of an astronaut riding horse on the moon red cat sitting table in kitchen".split()


@dataclass(frozen=True)
class ModelSpec:
    """One model component: its library, class, config file and (for a shortened text encoder) layers."""

    attr: str
    library: str
    class_name: str
    config_file: str
    layers: int | None = None

    def config(self) -> dict:
        config = json.loads((ARCHITECTURES / self.config_file).read_text())
        if self.layers is not None:
            config["num_layers"] = self.layers
        return {k: v for k, v in config.items() if not k.startswith("_")}


def pipelines() -> dict[str, dict]:
    """The manifest: backbone name -> its pipeline entry."""
    return {k: v for k, v in json.loads(PIPELINES_FILE.read_text()).items() if not k.startswith("_")}


def model_specs(backbone: str) -> list[ModelSpec]:
    """The model components of ``backbone`` (one of :func:`pipelines`), in the manifest's order."""
    entry = _entry(backbone)
    layers = entry.get("text_encoder_layers", {})
    return [ModelSpec(attr, lib, cls, file, layers.get(attr)) for attr, (lib, cls, file) in entry["models"].items()]


def _entry(backbone: str) -> dict:
    known = pipelines()
    if backbone not in known:
        raise ValueError(f"no full-size architecture for backbone {backbone!r}; known: {', '.join(known)}")
    return known[backbone]


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """``spec``'s model with random weights (float32, on torch's current default device)."""
    import diffusers
    import transformers

    if spec.library == "diffusers":
        return getattr(diffusers, spec.class_name).from_config(spec.config())
    config = spec.config()
    config_class = transformers.CONFIG_MAPPING[_model_type(spec.class_name)]
    return getattr(transformers, spec.class_name)(config_class(**config))


def _model_type(class_name: str) -> str:
    return {"CLIPTextModel": "clip_text_model", "CLIPTextModelWithProjection": "clip_text_model",
            "T5EncoderModel": "t5"}[class_name]


@functools.cache
def parameter_count(spec: ModelSpec) -> int:
    """Parameters of ``spec``'s model, counted on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        return sum(p.numel() for p in build_model(spec).parameters())


def build_tokenizer(kind: str, max_length: int):
    """A tokenizer built in memory that pads to the real token count ``max_length`` (77 for CLIP, 120
    for PixArt's T5): the encoders see the real sequence shapes; the vocabulary is a small one."""
    if kind == "clip":
        from flash_exp.toyworld.teacher import build_tokenizer as clip_bpe

        tokenizer = clip_bpe(TOKEN_WORDS)
        tokenizer.model_max_length = max_length
        return tokenizer
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in TOKEN_WORDS] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=max_length)


def write_pipeline(backbone: str, path: Path, device: torch.device | str = "cpu", seed: int = 0) -> Path:
    """Write ``backbone``'s pipeline directory at ``path`` (random weights, stored in bfloat16).

    The models are initialised on ``device`` (a GPU initialises the 2.6B-parameter SDXL UNet in a
    second) and written one at a time.
    """
    import diffusers

    entry = _entry(backbone)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    index: dict = {"_class_name": entry["pipeline"], "_diffusers_version": diffusers.__version__}
    for spec in model_specs(backbone):
        with torch.device(device):
            model = build_model(spec)
        model.to(torch.bfloat16).save_pretrained(path / spec.attr)
        index[spec.attr] = [spec.library, spec.class_name]
        del model
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    for attr, (kind, max_length) in entry["tokenizers"].items():
        tokenizer = build_tokenizer(kind, max_length)
        tokenizer.save_pretrained(path / attr)
        index[attr] = ["transformers", type(tokenizer).__name__]
    scheduler_name, scheduler_config = entry["scheduler"]
    getattr(diffusers, scheduler_name).from_config(scheduler_config).save_pretrained(path / "scheduler")
    index["scheduler"] = ["diffusers", scheduler_name]
    index.update({attr: [None, None] for attr in entry["absent"]})
    index.update(entry["index"])
    (path / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return path


def text_encoder_note(backbone: str) -> str | None:
    """What differs from the published text encoders (a shortened T5, T5 left out), or None."""
    return _entry(backbone).get("text_encoder_note")


__all__ = ["ARCHITECTURES", "ModelSpec", "build_model", "model_specs", "parameter_count", "pipelines",
           "text_encoder_note", "write_pipeline"]
