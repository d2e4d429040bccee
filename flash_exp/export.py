"""``python -m flash_exp.export run_dir=<run>``: the student in every format its users load.

Writes into ``<run>/export`` (or ``out=<dir>``):

- the backbone's own format (diffusers ``pytorch_lora_weights.safetensors`` with the adapter config
  as metadata for SD1.5, SDXL and SD3; a PEFT adapter directory for PixArt),
- ``flash_lora_kohya.safetensors`` for SD1.5 and SDXL: one file with the ``lora_unet_*`` /
  ``lora_down`` / ``lora_up`` / ``alpha`` key names that ComfyUI and kohya-style loaders read,
- ``backbone.yaml`` (the run's backbone config) and ``recipe.json`` (base model, scheduler class and
  spacing, steps, guidance, LoRA scale and module count), and a model card ``README.md`` (hub front
  matter, a load snippet, a sample grid).

``push_to_hub=<repo id>`` then uploads the folder with ``huggingface_hub``; without network it fails
at once.
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

from flash_exp.backbones.lora_files import LORA_FILE, PEFT_FILE, RECIPE_FILE
from flash_exp.config import BackboneConfig, TrainConfig, register_resolvers

log = logging.getLogger("flash_exp.export")

KOHYA_FILE = "flash_lora_kohya.safetensors"
BACKBONE_FILE = "backbone.yaml"
CARD_FILE = "README.md"
# kohya's ss_base_model_version and the modelspec architecture of each family with a kohya file
KOHYA_ARCHITECTURES = {"sd": ("sd_v1", "stable-diffusion-v1"), "sdxl": ("sdxl_base_v1-0", "stable-diffusion-xl-v1-base")}
KOHYA_FAMILIES = tuple(KOHYA_ARCHITECTURES)
# the license of each shipped teacher, as its hub model card states it; other teachers: "other"
BASE_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-xl-base-1.0": "openrail++",
    "diffusers/stable-diffusion-xl-1.0-inpainting-0.1": "openrail++",
    "stabilityai/stable-diffusion-x4-upscaler": "openrail++",
    "PixArt-alpha/PixArt-XL-2-1024-MS": "openrail++",
    "stabilityai/stable-diffusion-3-medium-diffusers": "other",
    "stabilityai/stable-diffusion-3.5-medium": "other",
    "stabilityai/stable-diffusion-3.5-large": "other",
    "black-forest-labs/FLUX.1-dev": "other",
}
# license_name and license_link of the teachers whose license is "other"
OTHER_LICENSES = {
    "stabilityai/stable-diffusion-3-medium-diffusers": (
        "stabilityai-ai-community",
        "https://huggingface.co/stabilityai/stable-diffusion-3-medium-diffusers/blob/main/LICENSE.md"),
    **{f"stabilityai/stable-diffusion-3.5-{size}": (
        "stabilityai-ai-community", f"https://huggingface.co/stabilityai/stable-diffusion-3.5-{size}/blob/main/LICENSE.md")
       for size in ("medium", "large")},
    "black-forest-labs/FLUX.1-dev": (
        "flux-1-dev-non-commercial-license", "https://huggingface.co/black-forest-labs/FLUX.1-dev/blob/main/LICENSE.md"),
}
FAMILY_TAGS = {"sd": "stable-diffusion", "sdxl": "stable-diffusion-xl", "pixart": "pixart-alpha",
               "sd3": "stable-diffusion-3", "flux": "flux"}


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


def kohya_metadata(cfg: TrainConfig, steps: int, title: str) -> dict[str, str]:
    """The safetensors metadata kohya-style loaders and model browsers read: sd-scripts' ``ss_*``
    training keys and the SAI model spec (``modelspec.*``)."""
    b = cfg.backbone
    version, architecture = KOHYA_ARCHITECTURES[b.family]
    side = b.resolution
    return {
        "ss_base_model_version": version,
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(b.lora.rank),
        "ss_network_alpha": str(float(b.lora.alpha)),
        "ss_resolution": f"({side}, {side})",
        "ss_steps": str(steps),
        "ss_v2": "False",
        "ss_v_parameterization": str(b.prediction == "v_prediction"),
        "ss_training_comment": "Flash Diffusion student distilled with flash_exp",
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": f"{architecture}/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": title,
        "modelspec.resolution": f"{side}x{side}",
        "modelspec.prediction_type": "v" if b.prediction == "v_prediction" else "epsilon",
    }


def recipe(cfg: TrainConfig, modules: int, steps: int = 4) -> dict:
    """The inference recipe that reproduces the student's samples; ``modules``: its LoRA modules."""
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
        "guidance_scale": b.student_guidance,
        "lora_scale": 1.0,
        "lora": {"rank": b.lora.rank, "alpha": b.lora.alpha, "targets": list(b.lora.targets), "modules": modules},
        "files": {
            "diffusers": LORA_FILE if b.family != "pixart" else None,
            "peft": PEFT_FILE if b.family == "pixart" else None,
            "kohya": KOHYA_FILE if b.family in KOHYA_FAMILIES else None,
        },
    }


def base_model_id(pretrained: str) -> str | None:
    """The hub id of the teacher ``pretrained`` names: the id itself, or the repository of a hub-cache
    snapshot directory (``.../models--owner--name/snapshots/<rev>``); None for other directories."""
    path = Path(pretrained).expanduser()
    if not path.exists():
        return pretrained if pretrained.count("/") == 1 else None
    repos = [p.removeprefix("models--").replace("--", "/") for p in path.resolve().parts if p.startswith("models--")]
    return repos[-1] if repos else None


def base_model_expression(pretrained: str, hub_id: str | None) -> str | None:
    """Python source that names the base model on any machine: the hub id, or the teacher shipped inside
    the flash_exp package (the toy teachers); None for a local directory only this machine has."""
    if hub_id:
        return repr(hub_id)
    package = Path(__file__).resolve().parent
    path = Path(pretrained).expanduser().resolve()
    if path.is_relative_to(package):
        return f'str(importlib.resources.files("flash_exp") / {path.relative_to(package).as_posix()!r})'
    return None


def front_matter(cfg: TrainConfig, hub_id: str | None) -> str:
    """The model card's YAML header the hub reads (base model, library, license, tags, pipeline)."""
    meta = {
        **({"base_model": hub_id} if hub_id else {}),
        "library_name": "diffusers",
        "license": BASE_LICENSES.get(hub_id or "", "other"),
        **dict(zip(("license_name", "license_link"), OTHER_LICENSES.get(hub_id or "", ()), strict=False)),
        "pipeline_tag": "text-to-image",
        "tags": ["text-to-image", "lora", "flash-diffusion", "distillation", "diffusers",
                 FAMILY_TAGS[cfg.backbone.family]],
    }
    return "---\n" + OmegaConf.to_yaml(OmegaConf.create(meta)) + "---\n"


def load_snippet(cfg: TrainConfig, rec: dict, base: str | None, lora_ref: str) -> str:
    """Python that loads the student from ``lora_ref`` (a hub id or ``"."``) over ``base`` and samples."""
    from flash_exp.backbones.base import scheduler_overrides

    b = cfg.backbone
    sched = b.student_scheduler
    args = "".join(f", {k}={v!r}" for k, v in scheduler_overrides(sched).items())
    head = ["import importlib.resources", ""] if base and base.startswith("str(importlib") else []
    here = "  # this folder" if lora_ref == "." else ""
    base_line = f"base = {base}" if base else 'base = "<the teacher: its hub id or a local copy>"  # set this'
    if b.family == "pixart":
        load = [
            f"from diffusers import {sched.name}, PixArtAlphaPipeline, PixArtTransformer2DModel",
            "from peft import PeftModel", "", base_line,
            'transformer = PixArtTransformer2DModel.from_pretrained(base, subfolder="transformer")',
            f"transformer = PeftModel.from_pretrained(transformer, {lora_ref!r}){here}",
            "pipe = PixArtAlphaPipeline.from_pretrained(base, transformer=transformer)",
        ]
    else:
        load = [f"from diffusers import {sched.name}, DiffusionPipeline", "", base_line,
                "pipe = DiffusionPipeline.from_pretrained(base)", f"pipe.load_lora_weights({lora_ref!r}){here}"]
    return "\n".join([*head, *load,
                      f"pipe.scheduler = {sched.name}.from_config(pipe.scheduler.config{args})",
                      f"image = pipe(\"a red circle on a blue background\", num_inference_steps={rec['steps']}, "
                      f"guidance_scale={rec['guidance_scale']}, height={b.resolution}, width={b.resolution}).images[0]",
                      'image.save("flash.png")'])


def model_card(cfg: TrainConfig, rec: dict, grid: str | None, base_model: str | None = None,
               lora_ref: str = ".") -> str:
    """The export's ``README.md``: hub front matter, what the student is, a load snippet that runs as
    written (``lora_ref``: the hub repo, or ``"."`` from inside the export folder), the sample grid.
    ``base_model`` (a hub id) overrides the one read from the teacher's name."""
    b = cfg.backbone
    hub_id = base_model or base_model_id(b.pretrained)
    base = base_model_expression(b.pretrained, hub_id)
    sched = rec["scheduler"]
    where = f"`{hub_id}`" if hub_id else "the toy teacher shipped in flash_exp" if base else "its teacher"
    lines = [
        front_matter(cfg, hub_id).rstrip("\n"),
        "",
        f"# Flash Diffusion student of {where}",
        "",
        f"A LoRA (rank {b.lora.rank}, alpha {b.lora.alpha}, {rec['lora']['modules']} modules) distilled with "
        f"flash_exp. It samples in {', '.join(map(str, rec['recommended_steps']))} steps with `{sched['class']}` "
        f"(`timestep_spacing=\"{sched['timestep_spacing']}\"`) and no classifier-free guidance.",
        "",
        "```python",
        load_snippet(cfg, rec, base, lora_ref),
        "```",
        "",
    ]
    if rec["files"]["kohya"]:
        lines += [f"`{KOHYA_FILE}` holds the same weights with ComfyUI / kohya key names and metadata "
                  "(load it with a LoRA loader node at strength 1.0).", ""]
    if grid:
        lines += ["## Samples", "", f"![samples]({grid})", "",
                  "Rows: the student at each number of steps, then the teacher at its own budget.", ""]
    lines += ["`recipe.json` holds these settings in machine-readable form.", ""]
    return "\n".join(lines)


def export_student(backbone, cfg: TrainConfig, out: Path, grid: Path | None = None, steps: int = 0,
                   base_model: str | None = None) -> Path:
    """Write every export format of the student held by ``backbone`` (trained ``steps`` steps) into
    ``out``; ``base_model``: the teacher's hub id when it was trained from a local copy. Returns ``out``."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    backbone.export(out)
    hub_id = base_model or base_model_id(cfg.backbone.pretrained)
    if cfg.backbone.family in KOHYA_FAMILIES:
        state = kohya_state_dict(get_peft_model_state_dict(backbone.base_denoiser), cfg.backbone.lora.alpha)
        title = f"Flash Diffusion LoRA of {hub_id or cfg.backbone.name}"
        save_file(state, out / KOHYA_FILE, metadata=kohya_metadata(cfg, steps, title))
    OmegaConf.save(OmegaConf.structured(cfg.backbone), out / BACKBONE_FILE)
    rec = recipe(cfg, backbone.num_lora_layers())
    (out / RECIPE_FILE).write_text(json.dumps(rec, indent=2) + "\n")
    grid_name = None
    if grid is not None and grid.is_file():
        grid_name = "samples.png"
        shutil.copyfile(grid, out / grid_name)
    (out / CARD_FILE).write_text(model_card(cfg, rec, grid_name, hub_id))
    return out


def push_to_hub(export_dir: Path, repo_id: str, cfg: TrainConfig, base_model: str | None = None) -> str:
    """Upload ``export_dir`` to the hub model repository ``repo_id`` (created when missing), its card's
    snippet loading from ``repo_id``; returns the repository URL. Fails at once without network."""
    from flash_exp.backbones.hub import require_hub

    require_hub(f"push {export_dir} to the hub repository {repo_id!r}")
    from huggingface_hub import HfApi

    rec = json.loads((export_dir / RECIPE_FILE).read_text())
    grid = "samples.png" if (export_dir / "samples.png").is_file() else None
    (export_dir / CARD_FILE).write_text(model_card(cfg, rec, grid, base_model, lora_ref=repo_id))
    api = HfApi()
    url = api.create_repo(repo_id, repo_type="model", exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(export_dir), repo_type="model",
                      commit_message="Flash Diffusion student exported by flash_exp")
    return str(url)


def load_backbone_config(export_dir: Path) -> BackboneConfig:
    """The backbone config stored beside an export (as written by :func:`export_student`)."""
    path = export_dir / BACKBONE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is {export_dir} a flash_exp export directory?")
    register_resolvers()
    merged = OmegaConf.merge(OmegaConf.structured(BackboneConfig), OmegaConf.load(path))
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def latest_grid(run_dir: Path) -> Path | None:
    """The run's newest sample grid (``samples/step_*.png``), or None."""
    grids = sorted((run_dir / "samples").glob("step_*.png"))
    return grids[-1] if grids else None


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from flash_exp.backbones.hub import HubUnreachableError, require_hub
    from flash_exp.training.student import load_run

    run_dir = Path(cfg.run_dir)
    try:
        if cfg.push_to_hub:  # before any weight loads: offline, fail at once
            require_hub(f"push to the hub repository {cfg.push_to_hub!r}")
        train_cfg, student, step = load_run(run_dir, cfg.checkpoint)
    except (FileNotFoundError, ValueError, HubUnreachableError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    out = Path(cfg.out) if cfg.out else run_dir / "export"
    export_student(student.backbone, train_cfg, out, latest_grid(run_dir), step, cfg.base_model)
    report = {"export": str(out), "files": sorted(p.name for p in out.iterdir())}
    if cfg.push_to_hub:
        from huggingface_hub.errors import HfHubHTTPError

        try:
            report["hub"] = push_to_hub(out, cfg.push_to_hub, train_cfg, cfg.base_model)
        except (HfHubHTTPError, HubUnreachableError) as err:  # e.g. no token, or no write access
            print(f"error: the export is in {out} but the upload failed: {err}", file=sys.stderr)
            sys.exit(2)
    print(json.dumps(report, indent=2))


__all__ = ["export_student", "kohya_metadata", "kohya_state_dict", "load_backbone_config", "model_card",
           "push_to_hub", "recipe"]

if __name__ == "__main__":
    from flash_exp.config import exit_on_config_error

    exit_on_config_error(sys.argv[1:], "export")
    main()
