"""``python -m flash_exp.export run_dir=<run>``: the student in every format its users load.

Writes into ``<run>/export`` (or ``out=<dir>``):

- the backbone's own format (diffusers ``pytorch_lora_weights.safetensors`` with the adapter config
  as metadata for SD1.5, SDXL and SD3; a PEFT adapter directory for PixArt),
- ``flash_lora_kohya.safetensors`` for SD1.5 and SDXL: one file with the ``lora_unet_*`` /
  ``lora_down`` / ``lora_up`` / ``alpha`` key names that ComfyUI and kohya-style loaders read,
- ``backbone.yaml`` (the run's backbone config) and ``recipe.json`` (base model, scheduler class and
  spacing, steps, guidance, LoRA scale), and a model card ``README.md`` with a sample grid.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from flash_exp.config import BackboneConfig, TrainConfig, register_resolvers, validate

log = logging.getLogger("flash_exp.export")

KOHYA_FILE = "flash_lora_kohya.safetensors"
RECIPE_FILE = "recipe.json"
BACKBONE_FILE = "backbone.yaml"
KOHYA_FAMILIES = ("sd", "sdxl")


def kohya_state_dict(peft_state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """PEFT LoRA weights of a UNet -> single-file keys read by ComfyUI and kohya-style loaders.

    ``down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight`` becomes
    ``lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight``;
    ``lora_B`` becomes ``lora_up`` and every module gets a scalar ``.alpha``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in peft_state.items():
        module, _, rest = key.partition(".lora_")
        if not rest:
            raise ValueError(f"not a LoRA weight: {key}")
        name = "lora_unet_" + module.removeprefix("unet.").replace(".", "_")
        part = {"A.weight": "lora_down.weight", "B.weight": "lora_up.weight"}.get(rest)
        if part is None:
            raise ValueError(f"unexpected LoRA parameter {key}")
        out[f"{name}.{part}"] = value.detach().to("cpu", torch.float32).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha))
    return out


def recipe(cfg: TrainConfig, steps: int = 4) -> dict:
    """The inference recipe that reproduces the student's samples."""
    b = cfg.backbone
    return {
        "base_model": b.pretrained,
        "method": cfg.method.name,
        "family": b.family,
        "resolution": b.resolution,
        "scheduler": {"class": b.student_scheduler.name, "timestep_spacing": b.student_scheduler.timestep_spacing,
                      **b.student_scheduler.kwargs},
        "steps": steps,
        "recommended_steps": [1, 2, 4],
        "guidance_scale": 0.0,
        "lora_scale": 1.0,
        "lora": {"rank": b.lora.rank, "alpha": b.lora.alpha, "targets": list(b.lora.targets)},
        "files": {
            "diffusers": "pytorch_lora_weights.safetensors" if b.family != "pixart" else None,
            "peft": "adapter_model.safetensors" if b.family == "pixart" else None,
            "kohya": KOHYA_FILE if b.family in KOHYA_FAMILIES else None,
        },
    }


def model_card(cfg: TrainConfig, rec: dict, grid: str | None) -> str:
    b = cfg.backbone
    load = (
        "from peft import PeftModel\n"
        "from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel, LCMScheduler\n"
        f"transformer = PeftModel.from_pretrained(PixArtTransformer2DModel.from_pretrained('{b.pretrained}', "
        "subfolder='transformer'), '<this folder>')\n"
        f"pipe = PixArtAlphaPipeline.from_pretrained('{b.pretrained}', transformer=transformer)\n"
        if b.family == "pixart"
        else "import diffusers\n"
        f"pipe = diffusers.DiffusionPipeline.from_pretrained('{b.pretrained}')\n"
        "pipe.load_lora_weights('<this folder>')\n"
    )
    sched = rec["scheduler"]
    extra = "".join(f", {k}={v!r}" for k, v in sched.items() if k not in ("class", "timestep_spacing"))
    lines = [
        f"# Flash Diffusion student of `{b.pretrained}`",
        "",
        f"A LoRA (rank {b.lora.rank}, alpha {b.lora.alpha}) distilled with flash_exp. It samples in "
        f"{', '.join(map(str, rec['recommended_steps']))} steps with `{sched['class']}` "
        f"(`timestep_spacing=\"{sched['timestep_spacing']}\"`) and no classifier-free guidance.",
        "",
        "```python",
        load.rstrip("\n"),
        f"pipe.scheduler = diffusers.{sched['class']}.from_config(pipe.scheduler.config, "
        f"timestep_spacing='{sched['timestep_spacing']}'{extra})" if b.family != "pixart" else
        f"pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, timestep_spacing='{sched['timestep_spacing']}'"
        f"{extra})",
        f"image = pipe('a prompt', num_inference_steps={rec['steps']}, guidance_scale=0.0).images[0]",
        "```",
        "",
    ]
    if rec["files"]["kohya"]:
        lines += [f"`{KOHYA_FILE}` holds the same weights with ComfyUI / kohya key names "
                  "(load it with a LoRA loader node at strength 1.0).", ""]
    if grid:
        lines += ["## Samples", "", f"![samples]({grid})", "",
                  "Rows: the student at each number of steps, then the teacher at its own budget.", ""]
    lines += ["`recipe.json` holds these settings in machine-readable form.", ""]
    return "\n".join(lines)


def export_student(backbone, cfg: TrainConfig, out: Path, grid: Path | None = None) -> Path:
    """Write every export format of the student held by ``backbone`` into ``out``; returns ``out``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    backbone.export(out)
    if cfg.backbone.family in KOHYA_FAMILIES:
        state = kohya_state_dict(get_peft_model_state_dict(backbone.denoiser), cfg.backbone.lora.alpha)
        save_file(state, out / KOHYA_FILE, metadata={"ss_network_dim": str(cfg.backbone.lora.rank),
                                                     "ss_network_alpha": str(cfg.backbone.lora.alpha)})
    OmegaConf.save(OmegaConf.structured(cfg.backbone), out / BACKBONE_FILE)
    rec = recipe(cfg)
    (out / RECIPE_FILE).write_text(json.dumps(rec, indent=2) + "\n")
    grid_name = None
    if grid is not None and grid.is_file():
        grid_name = "samples.png"
        shutil.copyfile(grid, out / grid_name)
    (out / "README.md").write_text(model_card(cfg, rec, grid_name))
    return out


def load_backbone_config(export_dir: Path) -> BackboneConfig:
    """The backbone config stored beside an export (as written by :func:`export_student`)."""
    path = export_dir / BACKBONE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {export_dir} a flash_exp export directory?")
    register_resolvers()
    merged = OmegaConf.merge(OmegaConf.structured(BackboneConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def load_run(run_dir: Path, checkpoint: str = "last"):
    """The run's typed config and its trained module (checkpoint ``last`` or a file name)."""
    from flash_exp.training.module import FlashModule

    cfg_path = run_dir / ".hydra" / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} is missing: is {run_dir} a flash_exp run directory?")
    register_resolvers()
    cfg = validate(OmegaConf.load(cfg_path))
    ckpt = run_dir / "checkpoints" / (f"{checkpoint}.ckpt" if not checkpoint.endswith(".ckpt") else checkpoint)
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint at {ckpt}")
    module = FlashModule(cfg)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    module.load_state_dict(state, strict=False)
    missing = set(module.trainable_state_dict()) - set(state)
    if missing:
        raise ValueError(f"{ckpt} lacks {len(missing)} trained weights, e.g. {sorted(missing)[:2]}")
    return cfg, module


def latest_grid(run_dir: Path) -> Path | None:
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    return grids[-1] if grids else None


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run_dir = Path(cfg.run_dir)
    try:
        train_cfg, module = load_run(run_dir, cfg.checkpoint)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out = Path(cfg.out) if cfg.out else run_dir / "export"
    export_student(module.backbone, train_cfg, out, latest_grid(run_dir))
    print(json.dumps({"export": str(out), "files": sorted(p.name for p in out.iterdir())}, indent=2))


__all__ = ["export_student", "kohya_state_dict", "load_backbone_config", "load_run", "recipe"]

if __name__ == "__main__":
    main()
