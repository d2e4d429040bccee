"""``python -m flash_exp.prefetch``: fetch ahead of time everything a run and its evaluation load.

The command line, the list of what a config loads (:func:`plan`), its table, the fetching
(:func:`prefetch`) and ``offline.env`` (:func:`write_env`); the items themselves are in
:mod:`flash_exp.prefetch.items`. The package docstring describes the whole.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from flash_exp.backbones.hub import GATED_REPOS, gated_note
from flash_exp.config import ConfigError, TrainConfig, compose_train_config
from flash_exp.prefetch.items import (
    CACHE_ENV,
    HUB_DIR,
    TORCH_DIR,
    CleanFidInception,
    HubPipeline,
    Item,
    LocalPath,
    MetricFiles,
    MetricWeights,
    OpenClipWeights,
    TorchHubCheckpoint,
    TorchvisionVgg16,
    model_item,
    vgg16_size,
)

DEFAULT_CACHE = "~/.cache/flash_exp"
ENV_FILE = "offline.env"
GATED_FAMILIES = ("sd3",)  # Stability AI gates its SD3 repositories behind a licence on the hub


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (links followed: the hub cache links blobs)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def plan(cfg: TrainConfig) -> tuple[list[Item], list[str]]:
    """What ``train`` and ``evaluate`` with ``cfg`` load, and the names of its COCO benchmarks."""
    from flash_exp.metrics.benchmarks import load_benchmark
    from flash_exp.metrics.clip_score import TOY_CLIP
    from flash_exp.metrics.registry import METRICS
    from flash_exp.tasks import task_class

    b, t = cfg.backbone, cfg.task
    items = [model_item("teacher", b.pretrained, "train, evaluate", revision=b.revision, variant=b.variant)]
    if t.name == "adapter_canny" and t.adapter.pretrained and t.adapter.pretrained != b.pretrained:
        items.append(model_item("task model (T2I-Adapter)", t.adapter.pretrained, "train, evaluate",
                                 subfolder=t.adapter.subfolder))
    if t.name == "faceswap" and t.identity.pretrained and t.identity.pretrained != b.pretrained:
        items.append(model_item("task model (identity encoder)", t.identity.pretrained, "train, evaluate"))
    vgg_users = []  # the LPIPS loss reads loss.distill.lpips_weights, else torch.hub's cache, as evaluate does
    if cfg.loss.distill.type == "lpips" and cfg.loss.distill.lpips_weights:
        items.append(LocalPath("VGG16 (LPIPS)", cfg.loss.distill.lpips_weights, "train"))
    elif cfg.loss.distill.type == "lpips":
        vgg_users.append("train")
    if task_class(t.name).has_ground_truth:
        vgg_users.append("evaluate (LPIPS)")
    if vgg_users:
        items.append(TorchvisionVgg16("VGG16 (LPIPS)", "torchvision vgg16-397923af.pth", ", ".join(vgg_users),
                                      vgg16_size()))
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
        for metric in (METRICS[m] for m in bench.metrics):
            wanted: list[Item] = [TorchHubCheckpoint(f"{metric.name} (torchvision)", url, "evaluate")
                                  for url in metric.torch_checkpoints(bench.metric_options.get(metric.name))]
            if metric.hub_repo is not None:
                wanted.append(MetricWeights(metric.name, metric.hub_repo, "evaluate",
                                            env_var=metric.weights_env or ""))
            if metric.files:
                sources = dict.fromkeys(f.repo or str(f.url).rsplit("/", 1)[-1] for f in metric.files)
                wanted.append(MetricFiles(metric.name, " + ".join(sources), "evaluate", metric=metric.name,
                                          env_var=metric.weights_env or ""))
            items.extend(w for w in wanted if not any(i.name == w.name for i in items))
    return items, coco


def gated_teacher_note(cfg: TrainConfig, teacher: Item, state: str) -> str | None:
    """What to do before fetching a teacher whose hub repository is gated (SD3, FLUX.1-dev), unless it is
    already here."""
    gated = cfg.backbone.family in GATED_FAMILIES or teacher.name in GATED_REPOS
    if not gated or not isinstance(teacher, HubPipeline) or state == "present":
        return None
    return gated_note(teacher.name)


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
    gated = gated_teacher_note(cfg, items[0], rows[0][1])
    if gated and dry_run:
        print(gated)
    if coco:
        group = eval_group(cfg.eval.benchmarks)
        print(f"COCO files ({', '.join(coco)}) are not fetched here: python -m flash_exp.data.coco check "
              f"root=DIR eval={group or 'EVAL'} says what is missing")
    if dry_run:
        return 0
    for line in failed:
        print(f"error: {line}", file=sys.stderr)
    if gated and failed:
        print(gated, file=sys.stderr)
    elif any("Gated" in line for line in failed):
        print("a gated repository (SD3, FLUX.1-dev) needs its licence accepted on the hub and `hf auth login` first",
              file=sys.stderr)
    if failed:
        return 1
    env = write_env(cache, found, overrides)
    print(f"wrote {env}: copy {cache} to the cluster, then `source {env.name}` there before train and evaluate")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flash_exp.prefetch",
                                     description=__doc__.splitlines()[0].strip("`"))
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
