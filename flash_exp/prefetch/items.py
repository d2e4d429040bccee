"""What ``python -m flash_exp.prefetch`` fetches: one :class:`Item` per thing a run or its evaluation
loads, each found in and fetched into the cache folder by its library's own function.

The cache folder holds ``huggingface/hub`` (:class:`HubPipeline`, :class:`HubRepo`,
:class:`OpenClipWeights`), ``cleanfid/`` (:class:`CleanFidInception`), ``torch/``
(:class:`TorchvisionVgg16`) and ``metrics/`` (:class:`MetricFiles`: a weights directory assembled from
several sources); a :class:`LocalPath` is named by the config and never fetched.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from pathlib import Path

from flash_exp.config import ConfigError

CACHE_ENV = "FLASH_EXP_CACHE"
HUB_DIR = "huggingface/hub"
TORCH_DIR = "torch"
METRICS_DIR = "metrics"
CLEANFID_DIR = "cleanfid"
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's preference


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a path on this machine (the rule of ``resolve_pretrained``)."""
    return not Path(name).expanduser().exists() and not name.startswith((".", "/", "~")) and name.count("/") == 1


@dataclass
class Item(abc.ABC):
    """Something a run or its evaluation loads. Subclasses say where it lives in the cache and fetch it."""

    what: str
    name: str
    used_by: str
    published_size: int | None = None  # bytes, as the library publishes it

    @abc.abstractmethod
    def find(self, cache: Path) -> Path | None:
        """The local copy in ``cache``, or None."""

    @abc.abstractmethod
    def fetch(self, cache: Path) -> Path:
        """Download into ``cache`` with the library's own function; returns the local copy."""

    def env(self, cache: Path, path: Path) -> dict[str, str]:
        """Variables of ``offline.env`` that point the runs at ``path`` (relative to ``$FLASH_EXP_CACHE``)."""
        return {}


@dataclass
class HubPipeline(Item):
    """A diffusers pipeline on the hub (the teacher): only the files the pipeline loads."""

    revision: str | None = None
    variant: str | None = None

    def find(self, cache: Path) -> Path | None:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(self.name, revision=self.revision, cache_dir=cache / HUB_DIR,
                                          local_files_only=True))
        except Exception:  # noqa: BLE001 (not in the cache, whatever the library raises)
            return None
        return path if (path / "model_index.json").is_file() else None

    def fetch(self, cache: Path) -> Path:
        from diffusers import DiffusionPipeline

        return Path(DiffusionPipeline.download(self.name, revision=self.revision, variant=self.variant,
                                               cache_dir=cache / HUB_DIR))


@dataclass
class HubRepo(Item):
    """A model repository on the hub (a task's frozen model), or one subfolder of it."""

    subfolder: str | None = None

    def find(self, cache: Path) -> Path | None:
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(self.name, cache_dir=cache / HUB_DIR, local_files_only=True))
        except Exception:  # noqa: BLE001
            return None
        return path if (path / (self.subfolder or "")).is_dir() else None

    def fetch(self, cache: Path) -> Path:
        from huggingface_hub import snapshot_download

        patterns = [f"{self.subfolder}/*"] if self.subfolder else None
        return Path(snapshot_download(self.name, cache_dir=cache / HUB_DIR, allow_patterns=patterns))


@dataclass
class MetricWeights(HubRepo):
    """The transformers weights of an optional metric (a hub repository without its TF/Flax copies);
    ``env_var`` points ``metric_weights.<metric>`` at them."""

    env_var: str = ""

    def find(self, cache: Path) -> Path | None:
        path = super().find(cache)
        return path if path is not None and (path / "config.json").is_file() else None

    def fetch(self, cache: Path) -> Path:
        from huggingface_hub import list_repo_files, snapshot_download

        files = list_repo_files(self.name)
        weights = "*.safetensors" if any(f.endswith(".safetensors") for f in files) else "pytorch_model.bin"
        return Path(snapshot_download(self.name, cache_dir=cache / HUB_DIR,
                                      allow_patterns=["*.json", "*.txt", weights]))

    def env(self, cache: Path, path: Path) -> dict[str, str]:
        return {self.env_var: _relative(cache, path)} if self.env_var else {}


@dataclass
class MetricFiles(Item):
    """The weights directory of optional metric ``metric`` whose files come from several hub repositories
    or URLs (``name``: them; :attr:`~flash_exp.metrics.registry.Metric.files`), assembled in
    ``metrics/<metric>``; ``env_var`` points ``metric_weights.<metric>`` at it."""

    metric: str = ""
    env_var: str = ""

    def _metric(self):
        from flash_exp.metrics.registry import METRICS

        return METRICS[self.metric]

    def _path(self, cache: Path) -> Path:
        return cache / METRICS_DIR / self.metric

    def find(self, cache: Path) -> Path | None:
        path = self._path(cache)
        return path if path.is_dir() and not self._metric().missing_files(path) else None

    def fetch(self, cache: Path) -> Path:
        import torch.hub
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        path = self._path(cache)
        for weight in self._metric().missing_files(path):
            folder = path / weight.folder
            folder.mkdir(parents=True, exist_ok=True)
            if weight.repo is None:
                torch.hub.download_url_to_file(str(weight.url), str(folder / weight.names[0]))
                continue
            *preferred, last = weight.names  # the first file the repository has
            for name in preferred:
                try:
                    hf_hub_download(weight.repo, name, local_dir=folder)
                    break
                except EntryNotFoundError:
                    continue
            else:
                hf_hub_download(weight.repo, last, local_dir=folder)
        return path

    def env(self, cache: Path, path: Path) -> dict[str, str]:
        return {self.env_var: _relative(cache, path)} if self.env_var else {}


@dataclass
class TorchHubCheckpoint(Item):
    """A torchvision checkpoint (``name``: its URL) where ``torch.hub`` looks for it (LPIPS's backbones)."""

    def _path(self, cache: Path) -> Path:
        return cache / TORCH_DIR / "hub" / "checkpoints" / Path(self.name).name

    def find(self, cache: Path) -> Path | None:
        return self._path(cache) if self._path(cache).is_file() else None

    def fetch(self, cache: Path) -> Path:
        import torch

        torch.hub.load_state_dict_from_url(self.name, model_dir=str(self._path(cache).parent), check_hash=True)
        return self._path(cache)


@dataclass
class OpenClipWeights(Item):
    """The weights file of an open_clip model and pretrained tag (CLIP score)."""

    model: str = ""
    tag: str = ""

    def _files(self) -> tuple[str, tuple[str, ...]]:
        """The hub repository and the file names open_clip tries in it (as ``download_pretrained_from_hf``)."""
        import open_clip

        hub = open_clip.get_pretrained_cfg(self.model, self.tag).get("hf_hub", "")
        if not hub:
            raise ConfigError("clip", f"{self.model} {self.tag}", "open_clip publishes no hub file for this tag")
        repo, filename = os.path.split(hub)
        return repo, (filename,) if filename else OPEN_CLIP_FILES

    def find(self, cache: Path) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        repo, filenames = self._files()
        for filename in filenames:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache / HUB_DIR)
            if isinstance(found, str):
                return Path(found)
        return None

    def fetch(self, cache: Path) -> Path:
        import open_clip

        cfg = open_clip.get_pretrained_cfg(self.model, self.tag)
        return Path(open_clip.download_pretrained(cfg, cache_dir=str(cache / HUB_DIR)))

    def env(self, cache: Path, path: Path) -> dict[str, str]:
        # evaluate reads clip_weights.ViT-g-14 from this variable; another model needs clip_weights.<model>=
        return {"FLASH_EXP_CLIP_WEIGHTS": _relative(cache, path)} if self.model == "ViT-g-14" else {}


@dataclass
class CleanFidInception(Item):
    """clean-fid's TorchScript Inception (FID features)."""

    def _path(self, cache: Path) -> Path:
        from flash_exp.metrics.features import INCEPTION_FILE

        return cache / CLEANFID_DIR / INCEPTION_FILE

    def find(self, cache: Path) -> Path | None:
        return self._path(cache) if self._path(cache).is_file() else None

    def fetch(self, cache: Path) -> Path:
        from cleanfid.downloads_helper import check_download_url

        from flash_exp.metrics.features import INCEPTION_URL

        self._path(cache).parent.mkdir(parents=True, exist_ok=True)
        return Path(check_download_url(local_folder=str(self._path(cache).parent), url=INCEPTION_URL))

    def env(self, cache: Path, path: Path) -> dict[str, str]:
        return {"FLASH_EXP_INCEPTION": _relative(cache, path)}


@dataclass
class TorchvisionVgg16(Item):
    """torchvision's VGG16 ImageNet weights (LPIPS), where ``torch.hub`` looks for them."""

    def _path(self, cache: Path) -> Path:
        from torchvision.models import VGG16_Weights

        return cache / TORCH_DIR / "hub" / "checkpoints" / Path(VGG16_Weights.IMAGENET1K_V1.url).name

    def find(self, cache: Path) -> Path | None:
        return self._path(cache) if self._path(cache).is_file() else None

    def fetch(self, cache: Path) -> Path:
        from torchvision.models import VGG16_Weights

        VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True, model_dir=str(self._path(cache).parent),
                                                   check_hash=True)
        return self._path(cache)


@dataclass
class LocalPath(Item):
    """A file or directory named by the config: nothing to fetch."""

    def find(self, cache: Path) -> Path | None:
        path = Path(self.name).expanduser()
        return path if path.exists() else None

    def fetch(self, cache: Path) -> Path:
        raise FileNotFoundError(f"{self.what} {self.name} is a local path that does not exist")


def _relative(cache: Path, path: Path) -> str:
    return f"${CACHE_ENV}/{Path(path).relative_to(cache).as_posix()}"


def vgg16_size() -> int:
    """The published size in bytes of torchvision's VGG16 ImageNet weights."""
    from torchvision.models import VGG16_Weights

    return int(VGG16_Weights.IMAGENET1K_V1.meta["_file_size"] * 1e6)


def model_item(what: str, name: str, used_by: str, **kwargs: str | None) -> Item:
    """A hub model (a pipeline, or a repository when ``subfolder`` is given), or a local path."""
    if not is_hub_id(name):
        return LocalPath(what, name, used_by)
    return (HubRepo if "subfolder" in kwargs else HubPipeline)(what, name, used_by, **kwargs)
