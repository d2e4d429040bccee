"""Export formats and the sampling CLI on a tiny SD run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from flash_exp.backbones import load_pipeline
from flash_exp.export import KOHYA_FILE, export_student, load_backbone_config
from flash_exp.train import train
from flash_exp.training.samples import sample_images
from flash_exp.training.student import load_run
from tests.conftest import REPO
from tests.fixtures_train import tiny_train_cfg

pytestmark = pytest.mark.slow

PROMPTS = ["a red circle", "a blue square"]

# ComfyUI maps `lora_unet_<diffusers module path, dots as underscores>` to its UNet keys
# (comfy/lora.py, model_lora_keys_unet), and reads `.lora_down.weight`, `.lora_up.weight`, `.alpha`.
COMFY_KEY_PATTERNS = [
    r"lora_unet_down_blocks_\d+_attentions_\d+_transformer_blocks_\d+_attn[12]_to_(q|k|v|out_0)",
    r"lora_unet_mid_block_attentions_0_transformer_blocks_\d+_attn[12]_to_(q|k|v|out_0)",
    r"lora_unet_up_blocks_\d+_attentions_\d+_transformer_blocks_\d+_attn[12]_to_(q|k|v|out_0)",
]
SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_sd_dir):
    from tests.conftest import solid_samples, write_shard

    tmp = tmp_path_factory.mktemp("export-run")
    shards = [str(write_shard(tmp / "a.tar", solid_samples(16)))]
    cfg = tiny_train_cfg(tiny_sd_dir, shards, "trainer.max_steps=2", "backbone.lora.alpha=8")
    run = tmp / "run"
    train(cfg, run)
    return cfg, run


def student_reference(run):
    cfg, module, _ = load_run(run)
    return cfg, module, sample_images(module.backbone, PROMPTS, True, 4, 0.0, seed=3, resolution=32)


def plain_sample(pipe, seed=3):
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))]
    return pipe(prompt=PROMPTS, num_inference_steps=4, guidance_scale=0.0, generator=gens,
                height=32, width=32, output_type="pt").images


def lora_modules(model) -> set[str]:
    return {name for name, m in model.named_modules() if hasattr(m, "lora_A") and len(m.lora_A) > 0}


def test_diffusers_export_reproduces_student_with_alpha_not_rank(trained_run):
    cfg, run = trained_run
    assert cfg.backbone.lora.alpha != cfg.backbone.lora.rank  # scale 2.0: metadata must carry alpha
    _, module, reference = student_reference(run)
    pipe = load_pipeline(load_backbone_config(run / "export"), run / "export", sampler="student")
    assert (plain_sample(pipe) - reference).abs().max().item() <= 1e-4
    assert len(lora_modules(pipe.unet)) == len(lora_modules(module.backbone.unet)) > 0


def test_kohya_single_file_keys_follow_comfyui_naming(trained_run):
    cfg, run = trained_run
    state = load_file(run / "export" / KOHYA_FILE)
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in state}
    assert modules and all(any(re.fullmatch(p, m) for p in COMFY_KEY_PATTERNS) for m in modules), sorted(modules)[:5]
    for m in modules:
        assert all(f"{m}.{s}" in state for s in SUFFIXES)
        assert state[f"{m}.lora_down.weight"].shape[0] == cfg.backbone.lora.rank
        assert float(state[f"{m}.alpha"]) == cfg.backbone.lora.alpha
    _, module, _ = student_reference(run)
    assert len(modules) == len(lora_modules(module.backbone.unet))


def test_kohya_file_loaded_by_diffusers_reproduces_student(trained_run):
    _, run = trained_run
    _, _, reference = student_reference(run)
    cfg = load_backbone_config(run / "export")
    pipe = load_pipeline(cfg, None, sampler="student")
    pipe.load_lora_weights(str(run / "export"), weight_name=KOHYA_FILE)
    assert (plain_sample(pipe) - reference).abs().max().item() <= 1e-4


def test_recipe_and_model_card(trained_run):
    cfg, run = trained_run
    recipe = json.loads((run / "export" / "recipe.json").read_text())
    assert recipe["scheduler"] == {"class": "LCMScheduler", "timestep_spacing": "trailing"}
    assert recipe["guidance_scale"] == 0.0 and recipe["steps"] == 4
    assert recipe["base_model"] == cfg.backbone.pretrained
    card = (run / "export" / "README.md").read_text()
    assert "LCMScheduler" in card and "samples.png" in card
    assert (run / "export" / "samples.png").is_file()


def test_export_cli_rewrites_the_export(trained_run, tmp_path):
    _, run = trained_run
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "flash_exp.export", f"run_dir={run}", f"out={out}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = load_file(out / "pytorch_lora_weights.safetensors")
    b = load_file(run / "export" / "pytorch_lora_weights.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sample_with_a_second_lora_differs_from_flash_alone(trained_run, tmp_path):
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    cfg, run = trained_run
    # a second, unrelated LoRA on the same base
    base = load_pipeline(load_backbone_config(run / "export"), None, sampler="student")
    torch.manual_seed(5)
    base.unet.add_adapter(LoraConfig(r=2, lora_alpha=2, init_lora_weights="gaussian",
                                     target_modules=["to_q", "to_v"]))
    with torch.no_grad():
        for name, p in base.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    style = tmp_path / "style"
    StableDiffusionPipeline.save_lora_weights(style, unet_lora_layers=get_peft_model_state_dict(base.unet))

    def run_cli(out, *extra):
        proc = subprocess.run(
            [sys.executable, "-m", "flash_exp.sample", f"export={run / 'export'}", "prompt=a red circle",
             "nfe=2", "seeds=[11]", f"out={out}", *extra],
            cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return np.asarray(Image.open(next(out.glob("*.png"))), dtype=np.float32)

    alone = run_cli(tmp_path / "alone")
    mixed = run_cli(tmp_path / "mixed", f"loras=[{{path: {style}, weight: 1.0}}]")
    assert np.abs(alone - mixed).max() > 1.0
    again = run_cli(tmp_path / "alone2")
    assert np.array_equal(alone, again)  # seeded: the difference is the second LoRA


@pytest.mark.parametrize("nfe", ["0", "-1", "two"])
def test_sample_refuses_an_nfe_below_1_naming_the_key(trained_run, tmp_path, nfe):
    _, run = trained_run
    proc = subprocess.run([sys.executable, "-m", "flash_exp.sample", f"export={run / 'export'}", "prompt=a red circle",
                           f"nfe={nfe}", f"out={tmp_path / 'out'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line == f"error: invalid config value nfe={nfe if nfe == 'two' else int(nfe)!r}: must be an integer >= 1 " \
                   "(the student's sampling steps)", line
    assert not (tmp_path / "out").exists()


def test_export_student_writes_every_format(trained_run, tmp_path):
    cfg, run = trained_run
    _, module, _ = load_run(run)
    out = export_student(module.backbone, cfg, tmp_path / "x")
    names = {p.name for p in out.iterdir()}
    assert {"pytorch_lora_weights.safetensors", KOHYA_FILE, "recipe.json", "backbone.yaml", "README.md"} <= names
