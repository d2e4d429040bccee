"""The scores of an evaluation and which way each is better; the optional metrics a benchmark lists.

Every benchmark computes FID, KID, precision/recall/density/coverage and the CLIP score. A benchmark's
``metrics:`` list adds optional ones, each a :class:`Metric` of :data:`METRICS` keyed by that name:
the result keys it writes and their direction, the Python package it needs and the ``pip`` extra that
installs it, the key of ``metric_weights`` naming its local weights (and, for a weights directory
assembled from several sources, the :class:`WeightFile` s it must hold), and its pinned model and
preprocessing (written into the eval spec, so a change makes another hash). :func:`check_available`
runs when a benchmark is prepared, before any image is generated. The scorer itself is built by
``build`` ("module:function", imported only then), which receives a :class:`MetricContext`.

No torch here: the leaderboard and the statistics read the directions.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

HIGHER, LOWER = "higher", "lower"
# the scores every benchmark computes
BUILTIN_DIRECTIONS = {"fid": LOWER, "kid": LOWER, "clip_score": HIGHER, "precision": HIGHER, "recall": HIGHER,
                      "density": HIGHER, "coverage": HIGHER}


class MetricUnavailable(RuntimeError):
    """A listed metric whose package or weights are not on this machine; the message says what to install or fetch."""


@dataclass(frozen=True)
class WeightFile:
    """One file a metric's weights directory must hold: in ``folder`` (``""``: the directory itself), the
    first of ``names`` present; fetched from hub repository ``repo`` (the first of ``names`` it has) or,
    without a repository, from ``url``."""

    folder: str
    names: tuple[str, ...]
    repo: str | None = None
    url: str | None = None

    def path(self, directory: Path) -> Path | None:
        """The file in ``directory``, or None when none of ``names`` is there."""
        return next((p for p in (directory / self.folder / n for n in self.names) if p.is_file()), None)

    def describe(self) -> str:
        """``folder/name`` (alternatives joined by ``|``)."""
        return "|".join(f"{self.folder}/{n}" if self.folder else n for n in self.names)



def fetch_commands(files: tuple[WeightFile, ...], directory: str) -> list[str]:
    """The shell commands that fetch ``files`` into ``directory``: one ``hf download`` per repository
    and folder, one ``curl`` per URL."""
    downloads: dict[tuple[str, str], list[str]] = {}
    commands = []
    for f in files:
        target = f"{directory}/{f.folder}" if f.folder else directory
        if f.repo is None:
            commands.append(f"curl -L --create-dirs -o {target}/{f.names[0]} {f.url}")
        else:
            downloads.setdefault((f.repo, target), []).append(f.names[0])
    return [f"hf download {repo} {' '.join(names)} --local-dir {target}"
            for (repo, target), names in downloads.items()] + commands


@dataclass(frozen=True)
class Metric:
    """One optional metric. ``scores``: result key -> ``"higher"`` or ``"lower"`` is better; ``package``:
    the module it imports (None: none beyond our dependencies); ``extra``: the pip extra installing it
    (None: none); ``weights``: the key of ``metric_weights`` (conf/evaluate.yaml) holding its local
    weights (None: none); ``fetch``: how to get those weights (followed by the commands that fetch
    ``files`` into the configured directory, when it has files); ``pinned``: model id, weights and
    preprocessing as the spec records them; ``build``: ``"module:function"`` returning the scorer,
    called with a :class:`MetricContext`; ``files``: what the weights directory must hold when it is
    assembled from several sources (empty: a hub repository's snapshot, ``hub_repo``)."""

    name: str
    scores: dict[str, str]
    package: str | None
    extra: str | None
    weights: str | None
    fetch: str
    pinned: dict[str, Any]
    build: str
    needs_groups: bool = False  # needs images_per_prompt >= 2
    hub_repo: str | None = None  # where ``prefetch`` fetches the weights from (hugging face hub)
    weights_env: str | None = None  # the variable of offline.env that points metric_weights at them
    files: tuple[WeightFile, ...] = ()

    def torch_checkpoints(self, options: dict[str, Any] | None = None) -> list[str]:
        """URLs of the torchvision checkpoints (``torch.hub`` cache) the metric loads with ``options``."""
        return []

    def check_available(self, weights: str | None, options: dict[str, Any] | None = None) -> None:
        """Raise :class:`MetricUnavailable` naming what to install or fetch when the package or the
        weights (the local path ``weights``) are missing; loads nothing. ``options``: the benchmark's
        options of this metric."""
        if self.package is not None and importlib.util.find_spec(self.package) is None:
            install = f"'.[{self.extra}]'" if self.extra else self.package
            raise MetricUnavailable(
                f"metric {self.name!r} needs the Python package {self.package!r}, which is not installed: "
                f"pip install {install} (or remove {self.name} from the benchmark's metrics)")
        if self.weights is None:
            return
        # a directory assembled from files: the commands that fill the configured one
        fetch = self.fetch + "; ".join(fetch_commands(self.files, str(weights))) if self.files else self.fetch
        if weights is None or not Path(weights).expanduser().exists():
            raise MetricUnavailable(
                f"metric {self.name!r} needs its weights at metric_weights.{self.weights}={weights!r}, which "
                f"does not exist; nothing is downloaded at run time. {fetch}")
        if missing := self.missing_files(Path(weights).expanduser()):
            raise MetricUnavailable(
                f"metric {self.name!r}: metric_weights.{self.weights}={weights!r} lacks "
                f"{', '.join(f.describe() for f in missing)}; nothing is downloaded at run time. {fetch}")

    def missing_files(self, directory: Path) -> list[WeightFile]:
        """The :attr:`files` that ``directory`` lacks."""
        return [f for f in self.files if f.path(directory) is None]

    def load(self, context: MetricContext) -> MetricScorer:
        module, function = self.build.split(":")
        return getattr(importlib.import_module(module), function)(self, context)


@dataclass
class MetricContext:
    """What a scorer is built from: its local ``weights`` path (None when it needs none), the device,
    the cache directory (reference features, file digests), the benchmark's options for it and the
    reference images with the key that identifies them."""

    weights: str | None
    device: Any
    cache_dir: Path
    options: dict[str, Any] = field(default_factory=dict)
    reference_files: list[Path] = field(default_factory=list)
    reference_key: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoreInput:
    """One draw's images to score: ``files`` generated from ``prompts`` in order, ``images_per_prompt``
    consecutive files per prompt, cropped and resized to ``eval_res``; ``features`` (N, D): the
    benchmark's FID features of the same files."""

    files: list[Path]
    prompts: list[str]
    images_per_prompt: int
    eval_res: int
    batch_size: int
    num_workers: int
    features: Any


class MetricScorer(Protocol):
    """A loaded metric: :meth:`describe` the pinned settings with the weights' digest (spec entry), and
    :meth:`score` returning ``{result key: value}`` for one draw."""

    def describe(self) -> dict[str, Any]: ...

    def score(self, batch: ScoreInput) -> dict[str, float | None]: ...


CMMD = Metric(
    "cmmd", {"cmmd": LOWER}, package=None, extra="modern", weights="cmmd",
    fetch=("python -m flash_exp.prefetch eval=modern fetches them, or: hf download "
           "openai/clip-vit-large-patch14-336 --local-dir weights/clip-vit-large-patch14-336"),
    hub_repo="openai/clip-vit-large-patch14-336", weights_env="FLASH_EXP_CMMD_WEIGHTS",
    pinned={"model": "openai/clip-vit-large-patch14-336", "library": "transformers CLIPVisionModelWithProjection",
            "input_size": 336, "embedding": "image_embeds, L2-normalised",
            "kernel": "gaussian rbf exp(-|x-y|^2 / (2 sigma^2)), sigma 10", "scale": 1000,
            "estimator": "google-research/cmmd distance.mmd: means over the full kernel matrices"},
    build="flash_exp.metrics.cmmd:build")
FD_DINOV2 = Metric(
    "fd_dinov2", {"fd_dinov2": LOWER}, package=None, extra="modern", weights="fd_dinov2",
    fetch=("python -m flash_exp.prefetch eval=modern fetches them, or: hf download facebook/dinov2-large "
           "--local-dir weights/dinov2-large"),
    hub_repo="facebook/dinov2-large", weights_env="FLASH_EXP_DINOV2_WEIGHTS",
    pinned={"model": "facebook/dinov2-large", "library": "transformers Dinov2Model", "input_size": 224,
            "features": "pooler_output: the final-layernormed CLS token (dgm-eval's DINOv2 encoder)",
            "normalisation": "ImageNet mean/std", "distance": "clean-fid frechet_distance"},
    build="flash_exp.metrics.dinov2:build")
DEFAULT_LPIPS_NET = "alex"
# torchvision's ImageNet weights each lpips network loads (torch.hub checkpoints)
LPIPS_BACKBONES = {"alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                   "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
                   "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"}


class DiversityMetric(Metric):
    """Vendi always; pairwise LPIPS when the benchmark's ``diversity.lpips_net`` is set (alex | vgg | squeeze),
    which needs the ``lpips`` package and torchvision's ImageNet weights of that network."""

    def torch_checkpoints(self, options: dict[str, Any] | None = None) -> list[str]:
        net = (options or {}).get("lpips_net", DEFAULT_LPIPS_NET)
        return [] if net is None or net not in LPIPS_BACKBONES else [LPIPS_BACKBONES[net]]

    def check_available(self, weights: str | None, options: dict[str, Any] | None = None) -> None:
        net = (options or {}).get("lpips_net", DEFAULT_LPIPS_NET)
        if net is None:
            return
        if importlib.util.find_spec("lpips") is None:
            raise MetricUnavailable(
                f"metric {self.name!r} with lpips_net={net} needs the Python package 'lpips', which is not "
                f"installed: pip install '.[{self.extra}]' (or set the benchmark's diversity.lpips_net: null)")
        from flash_exp.metrics.diversity import missing_lpips_weights

        missing = missing_lpips_weights(net)
        if missing is not None:
            raise MetricUnavailable(f"metric {self.name!r} with lpips_net={net}: {missing}")


DIVERSITY = DiversityMetric(
    "diversity", {"lpips_diversity": HIGHER, "vendi": HIGHER}, package=None, extra="modern", weights=None,
    fetch="", pinned={"vendi": "exp(entropy of the eigenvalues of K/n), K: cosine similarity of the "
                               "benchmark's FID features, per prompt, mean over prompts",
                      "lpips_diversity": "mean LPIPS over the pairs of a prompt's images, mean over prompts"},
    build="flash_exp.metrics.diversity:build", needs_groups=True)

# preference scores: the published weights loaded with the libraries their authors used (flash_exp.metrics.preference)
PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPS_REPO, HPS_FILE = "xswu/HPSv2", "HPS_v2.1_compressed.pt"
AESTHETIC_FILE = "sac+logos+ava1-l14-linearMSE.pth"
AESTHETIC_URL = f"https://github.com/christophschuhmann/improved-aesthetic-predictor/raw/main/{AESTHETIC_FILE}"
AESTHETIC_CLIP_HUB = "timm/vit_large_patch14_clip_224.openai"  # open_clip's file of ViT-L-14 "openai"
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
IMAGEREWARD_REPO, IMAGEREWARD_FILE, IMAGEREWARD_CONFIG = "THUDM/ImageReward", "ImageReward.pt", "med_config.json"
IMAGEREWARD_TOKENIZER = "bert-base-uncased"
IMAGEREWARD_MEAN, IMAGEREWARD_STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py
CLIP_PREPROCESS = "RGB; resize shorter side to {size} (bicubic); centre crop {size}; /255; normalise OpenAI mean/std"
PREFERENCE_INPUT = "the generated PNGs as saved (not cropped to eval_res), one score per image with its prompt"


def _preference(name: str, files: tuple[WeightFile, ...], pinned: dict[str, Any]) -> Metric:
    """A preference score (higher is better, mean over images): core dependencies only, its weights a
    directory ``metric_weights.<name>`` holding ``files``."""
    fetch = "python -m flash_exp.prefetch eval=modern fetches them, or: "  # + the commands of the files
    return Metric(name, {name: HIGHER}, package=None, extra=None, weights=name, fetch=fetch,
                  pinned={**pinned, "input": PREFERENCE_INPUT, "aggregate": "mean over images"},
                  build="flash_exp.metrics.preference:build", weights_env=f"FLASH_EXP_{name.upper()}_WEIGHTS",
                  files=files)


IMAGEREWARD = _preference(
    "imagereward",
    (WeightFile("", (IMAGEREWARD_FILE,), IMAGEREWARD_REPO), WeightFile("", (IMAGEREWARD_CONFIG,), IMAGEREWARD_REPO),
     WeightFile("tokenizer", ("vocab.txt",), IMAGEREWARD_TOKENIZER),
     WeightFile("tokenizer", ("tokenizer_config.json",), IMAGEREWARD_TOKENIZER)),
    {"model": f"{IMAGEREWARD_REPO}/{IMAGEREWARD_FILE} (ImageReward-v1.0)", "tokenizer": IMAGEREWARD_TOKENIZER,
     "library": "transformers BlipVisionModel + BlipTextModel",
     "preprocess": CLIP_PREPROCESS.format(size=224) + "; BERT tokens padded to 35, truncated",
     "score": f"(MLP(text_encoder(prompt, image)[CLS]) - {IMAGEREWARD_MEAN}) / {IMAGEREWARD_STD}"})
PICKSCORE = _preference(
    "pickscore",
    (WeightFile("model", ("config.json",), PICKSCORE_MODEL),
     WeightFile("model", ("model.safetensors", "pytorch_model.bin"), PICKSCORE_MODEL),
     *(WeightFile("processor", (n,), PICKSCORE_PROCESSOR)
       for n in ("preprocessor_config.json", "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt",
                 "special_tokens_map.json"))),
    {"model": PICKSCORE_MODEL, "processor": PICKSCORE_PROCESSOR, "library": "transformers CLIPModel",
     "preprocess": "the processor's: " + CLIP_PREPROCESS.format(size=224) + "; text max_length 77",
     "score": "logit_scale.exp() * cos(image_embedding, text_embedding)"})
HPSV21 = _preference(
    "hpsv21", (WeightFile("", (HPS_FILE,), HPS_REPO),),
    {"model": "open_clip ViT-H-14", "weights": f"{HPS_REPO}/{HPS_FILE}", "library": "open_clip",
     "preprocess": CLIP_PREPROCESS.format(size=224) + "; open_clip tokenizer, context 77",
     "score": "cos(image_embedding, text_embedding) (hpsv2 img_score.score)"})
AESTHETIC = _preference(
    "aesthetic", (WeightFile("", (AESTHETIC_FILE,), url=AESTHETIC_URL), WeightFile("", OPEN_CLIP_WEIGHTS, AESTHETIC_CLIP_HUB)),
    {"model": "open_clip ViT-L-14 openai", "head": f"improved-aesthetic-predictor {AESTHETIC_FILE}",
     "library": "open_clip", "preprocess": CLIP_PREPROCESS.format(size=224),
     "score": "MLP(image_embedding / ||image_embedding||)"})

METRICS: dict[str, Metric] = {m.name: m for m in (CMMD, FD_DINOV2, DIVERSITY, IMAGEREWARD, PICKSCORE, HPSV21,
                                                  AESTHETIC)}


def directions() -> dict[str, str]:
    """Every result key an evaluation can write -> ``"higher"`` or ``"lower"`` is better."""
    out = dict(BUILTIN_DIRECTIONS)
    for metric in METRICS.values():
        out.update(metric.scores)
    return out


def optional_scores() -> list[str]:
    """The result keys of the optional metrics, in registration order."""
    return [key for metric in METRICS.values() for key in metric.scores]


def arrow(key: str) -> str:
    """``↓`` for a score where lower is better, ``↑`` where higher is."""
    known = directions()
    if key not in known:
        raise ValueError(f"metric={key!r}, allowed: {', '.join(sorted(known))}")
    return "↓" if known[key] == LOWER else "↑"

