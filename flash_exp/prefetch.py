"""``python -m flash_exp.prefetch``: fetch ahead of time everything a run and its evaluation load.

    python -m flash_exp.prefetch --dry-run backbone=sdxl task=inpainting eval=paper   # only list
    python -m flash_exp.prefetch --cache /scratch/flash-cache backbone=sdxl task=inpainting eval=paper
    source /scratch/flash-cache/offline.env        # then train and evaluate need no network

The arguments after the options are the overrides of ``python -m flash_exp.train`` (its ``eval`` group
names the benchmarks that the evaluation scores). Listed, with their size where known (what is
already in the cache; VGG16's published size): the teacher (a hub pipeline), the task's frozen models
(the T2I-Adapter, a face-swap identity encoder held elsewhere), the VGG16 ImageNet weights of LPIPS
(the ``lpips`` distillation loss; the restoration scores of a task with ground truth), clean-fid's
Inception weights (FID) and the open_clip weights of each benchmark's CLIP model. Each is fetched by
its library's own function into one cache folder: ``huggingface/hub`` (``DiffusionPipeline.download``,
``snapshot_download``, ``open_clip.download_pretrained``), ``cleanfid/`` (clean-fid's
``check_download_url``) and ``torch/`` (torchvision's ``VGG16_Weights.get_state_dict``). Then
``offline.env`` in that folder sets ``HF_HUB_OFFLINE=1`` and the paths the runs read (``HF_HUB_CACHE``,
``TORCH_HOME``, ``FLASH_EXP_INCEPTION``, ``FLASH_EXP_CLIP_WEIGHTS``); copy the folder to the cluster and
``source`` it there (set ``FLASH_EXP_CACHE`` first when the folder lives at another path).

COCO images are not fetched here: ``python -m flash_exp.data.coco check`` says what is missing.
A local directory (``backbone.pretrained=DIR``, the toy world) is listed as local; nothing is fetched.
"""

from __future__ import annotations

import abc
import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from flash_exp.config import ConfigError, TrainConfig, compose_train_config

CACHE_ENV = "FLASH_EXP_CACHE"
DEFAULT_CACHE = "~/.cache/flash_exp"
ENV_FILE = "offline.env"
HUB_DIR = "huggingface/hub"
TORCH_DIR = "torch"
CLEANFID_DIR = "cleanfid"
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip's preference


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a path on this machine (the rule of ``resolve_pretrained``)."""
    return not Path(name).expanduser().exists() and not name.startswith((".", "/", "~")) and name.count("/") == 1


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (links followed: the hub cache links blobs)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


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


def _vgg16_size() -> int:
    from torchvision.models import VGG16_Weights

    return int(VGG16_Weights.IMAGENET1K_V1.meta["_file_size"] * 1e6)


def _model_item(what: str, name: str, used_by: str, **kwargs) -> Item:
    if not is_hub_id(name):
        return LocalPath(what, name, used_by)
    return (HubRepo if "subfolder" in kwargs else HubPipeline)(what, name, used_by, **kwargs)


def plan(cfg: TrainConfig) -> tuple[list[Item], list[str]]:
    """What ``train`` and ``evaluate`` with ``cfg`` load, and the names of its COCO benchmarks."""
    from flash_exp.metrics.benchmarks import load_benchmark
    from flash_exp.metrics.clip_score import TOY_CLIP
    from flash_exp.tasks import task_class

    b, t = cfg.backbone, cfg.task
    items = [_model_item("teacher", b.pretrained, "train, evaluate", revision=b.revision, variant=b.variant)]
    if t.name == "adapter_canny" and t.adapter.pretrained and t.adapter.pretrained != b.pretrained:
        items.append(_model_item("task model (T2I-Adapter)", t.adapter.pretrained, "train, evaluate",
                                 subfolder=t.adapter.subfolder))
    if t.name == "faceswap" and t.identity.pretrained and t.identity.pretrained != b.pretrained:
        items.append(_model_item("task model (identity encoder)", t.identity.pretrained, "train, evaluate"))
    vgg_users = []  # the LPIPS loss reads loss.distill.lpips_weights, else torch.hub's cache, as evaluate does
    if cfg.loss.distill.type == "lpips" and cfg.loss.distill.lpips_weights:
        items.append(LocalPath("VGG16 (LPIPS)", cfg.loss.distill.lpips_weights, "train"))
    elif cfg.loss.distill.type == "lpips":
        vgg_users.append("train")
    if task_class(t.name).has_ground_truth:
        vgg_users.append("evaluate (LPIPS)")
    if vgg_users:
        items.append(TorchvisionVgg16("VGG16 (LPIPS)", "torchvision vgg16-397923af.pth", ", ".join(vgg_users),
                                      _vgg16_size()))
    coco: list[str] = []
    for name in cfg.eval.benchmarks:
        bench = load_benchmark(name, overrides=dict(cfg.eval.options.get(name) or {}))
        if bench.source == "coco":
            coco.append(name)
        if bench.features == "inception" and not any(isinstance(i, CleanFidInception) for i in items):
            items.append(CleanFidInception("FID Inception", "clean-fid inception-2015-12-05.pt", "evaluate"))
        clip = f"open_clip {bench.clip.model} {bench.clip.pretrained}"
        if bench.clip.model != TOY_CLIP and not any(i.name == clip for i in items):
            items.append(OpenClipWeights("CLIP", clip, "evaluate", model=bench.clip.model, tag=bench.clip.pretrained))
    return items, coco


def eval_group(benchmarks: list[str]) -> str | None:
    """The ``conf/eval`` group that names exactly ``benchmarks``, if one does."""
    from flash_exp.data.coco import EVAL_DIR, eval_benchmarks

    return next((p.stem for p in sorted(EVAL_DIR.glob("*.yaml")) if eval_benchmarks(p.stem) == list(benchmarks)),
                None)


def _human(size: int | None) -> str:
    if size is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def table(rows: list[tuple[Item, str, int | None]]) -> str:
    """One line per item: what, name, used by, size, state."""
    header = ("what", "name", "used by", "size", "state")
    lines = [header] + [(i.what, i.name, i.used_by, _human(size), state) for i, state, size in rows]
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def write_env(cache: Path, found: list[tuple[Item, Path]], overrides: list[str]) -> Path:
    """``cache/offline.env``: HF_HUB_OFFLINE=1 and the cache paths, relative to ``$FLASH_EXP_CACHE``."""
    variables = {"HF_HOME": f"${CACHE_ENV}/huggingface", "HF_HUB_CACHE": f"${CACHE_ENV}/{HUB_DIR}",
                 "HF_HUB_OFFLINE": "1", "TORCH_HOME": f"${CACHE_ENV}/{TORCH_DIR}"}
    for item, path in found:
        variables.update(item.env(cache, path))
    lines = [f"# python -m flash_exp.prefetch {' '.join(overrides)}",
             "# source this file on the cluster; set FLASH_EXP_CACHE first if the folder moved",
             f'export {CACHE_ENV}="${{{CACHE_ENV}:-{cache}}}"']
    lines += [f'export {key}="{value}"' for key, value in variables.items()]
    path = cache / ENV_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


def prefetch(cfg: TrainConfig, cache: Path, dry_run: bool, overrides: list[str]) -> int:
    """List (and unless ``dry_run`` fetch) what ``cfg`` loads; returns the exit code."""
    items, coco = plan(cfg)
    found: list[tuple[Item, Path]] = []
    rows: list[tuple[Item, str, int | None]] = []
    failed = []
    for item in items:
        path = item.find(cache)
        state = "local" if isinstance(item, LocalPath) and path else ("present" if path else "missing")
        if path is None and not dry_run:
            print(f"fetching {item.what}: {item.name}", flush=True)
            try:
                path, state = item.fetch(cache), "fetched"
            except Exception as err:  # noqa: BLE001 (reported per item; the others still get fetched)
                state = "FAILED"
                failed.append(f"{item.what} {item.name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        if path is not None:
            found.append((item, path))
        rows.append((item, state, _size(path) if path is not None else item.published_size))
    print(f"cache: {cache}")
    print(table(rows))
    if coco:
        group = eval_group(cfg.eval.benchmarks)
        print(f"COCO files ({', '.join(coco)}) are not fetched here: python -m flash_exp.data.coco check "
              f"root=DIR eval={group or 'EVAL'} says what is missing")
    if dry_run:
        return 0
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    if any("Gated" in line for line in failed):
        print("a gated repository (SD3) needs its licence accepted on the hub and `hf auth login` first",
              file=sys.stderr)
    if failed:
        return 1
    env = write_env(cache, found, overrides)
    print(f"wrote {env}: copy {cache} to the cluster, then `source {env.name}` there before train and evaluate")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].strip("`"))
    parser.add_argument("--dry-run", action="store_true", help="only list what the run loads")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE)),
                        help=f"the cache folder (default ${CACHE_ENV}, else {DEFAULT_CACHE})")
    parser.add_argument("overrides", nargs="*", help="overrides of python -m flash_exp.train")
    args = parser.parse_args(argv)
    try:
        cfg = compose_train_config(args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return prefetch(cfg, args.cache.expanduser().resolve(), args.dry_run, args.overrides)


if __name__ == "__main__":
    sys.exit(main())
