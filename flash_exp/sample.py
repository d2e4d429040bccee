"""``python -m flash_exp.sample``: few-step generation from an export, optionally with other LoRAs.

The Flash LoRA and every extra LoRA are loaded as named adapters of one diffusers pipeline and mixed
with ``set_adapters`` (training-free combination, as the paper shows). Image i of prompt p is drawn
with the generator seeded ``seed``; files are ``<out>/<prompt index>_<seed>.png``, by default under the
export directory (``<export>/samples``), never in the working directory.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from flash_exp.backbones.lora_files import RECIPE_FILE
from flash_exp.config import ConfigError
from flash_exp.export import load_backbone_config


@dataclass
class ExtraLora:
    path: str
    weight: float = 1.0


def build_sampler(export_dir: Path, extra: list[ExtraLora], flash_weight: float = 1.0):
    """The base pipeline with the Flash LoRA (adapter ``flash``) and extra LoRAs (``extra_<i>``); raises
    :class:`~flash_exp.backbones.lora_files.LoraLoadError` when a load leaves out modules of its file."""
    from flash_exp.backbones import load_pipeline
    from flash_exp.backbones.lora_files import check_lora_attached, lora_weights_file, pipeline_modules

    if not (export_dir / RECIPE_FILE).is_file():
        raise FileNotFoundError(f"{export_dir} has no {RECIPE_FILE}: export the run first (python -m flash_exp.export)")
    cfg = load_backbone_config(export_dir)
    pipe = load_pipeline(cfg, export_dir, sampler="student")
    if extra:
        if not hasattr(pipe, "set_adapters"):
            raise ValueError(f"extra LoRAs need a diffusers LoRA loader; {type(pipe).__name__} has none")
        names = ["flash"]
        for i, lora in enumerate(extra):
            names.append(f"extra_{i}")
            pipe.load_lora_weights(lora.path, adapter_name=names[-1])
            check_lora_attached(pipeline_modules(pipe), names[-1], lora_weights_file(lora.path))
        pipe.set_adapters(names, adapter_weights=[flash_weight] + [lora.weight for lora in extra])
    elif flash_weight != 1.0 and hasattr(pipe, "set_adapters"):
        pipe.set_adapters(["flash"], adapter_weights=[flash_weight])
    return pipe, cfg


def generate(pipe, prompts: list[str], seeds: list[int], nfe: int, resolution: int, out: Path,
             guidance: float = 0.0) -> list[Path]:
    """One image per (prompt, seed), no CFG (``guidance``: the guidance input of a guidance-distilled
    teacher's student, ``backbone.student_guidance``); returns the written PNG paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [(i, p, s) for i, p in enumerate(prompts) for s in seeds]
    for i, prompt, seed in tqdm(jobs, desc=f"sampling {nfe} NFE", unit="img"):
        image = pipe(prompt=prompt, num_inference_steps=nfe, guidance_scale=guidance,
                     generator=torch.Generator().manual_seed(seed), height=resolution, width=resolution).images[0]
        path = out / f"{i:04d}_{seed}.png"
        image.save(path)
        written.append(path)
    return written


def check_nfe(nfe: object) -> int:
    """``nfe`` as the student's number of sampling steps; :class:`ConfigError` unless an integer >= 1."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ConfigError("nfe", nfe, "must be an integer >= 1 (the student's sampling steps)")
    return nfe


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
    prompts = [prompt] if prompt else []
    if prompts_file:
        prompts += [line.strip() for line in Path(prompts_file).read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError("give prompt=... or prompts_file=...")
    return prompts


@hydra.main(config_path="../conf", config_name="sample", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from flash_exp.training.console import quiet_console

    quiet_console()
    try:
        nfe = check_nfe(cfg.nfe)
        if cfg.export is None and cfg.run_dir is None:
            raise ValueError("give export=<export dir> or run_dir=<run dir>")
        export_dir = Path(cfg.export) if cfg.export else Path(cfg.run_dir) / "export"
        prompts = read_prompts(cfg.prompt, cfg.prompts_file)
        extra = [ExtraLora(str(lora["path"]), float(lora.get("weight", 1.0))) for lora in cfg.loras]
        pipe, backbone_cfg = build_sampler(export_dir, extra, float(cfg.flash_weight))
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out = Path(cfg.out) if cfg.out else export_dir / "samples"
    paths = generate(pipe, prompts, list(cfg.seeds), nfe, backbone_cfg.resolution, out, backbone_cfg.student_guidance)
    print(f"wrote {len(paths)} images to {out}")


if __name__ == "__main__":
    from flash_exp.config import exit_on_config_error

    exit_on_config_error(sys.argv[1:], "sample")
    main()
