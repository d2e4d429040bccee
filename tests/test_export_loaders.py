"""The export loads whole in plain diffusers (and PEFT for PixArt), for every family and target set.

Each case trains a tiny student two steps, exports it, and loads the export the way a user does,
with no flash_exp code in the loading path: the family's diffusers pipeline from the saved teacher
directory, the scheduler named in ``recipe.json``, ``pipe.load_lora_weights(export_dir)`` (PixArt:
``PeftModel.from_pretrained``). The image at the recipe's steps must match the trained student's,
and the LoRA layers attached must be as many as the modules in the file.
"""

from __future__ import annotations

import json
import shutil

import diffusers
import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from flash_exp.export import load_run
from flash_exp.train import train
from flash_exp.training.samples import sample_images
from tests.test_backbones import PROMPTS, backbone_cfg, train_overrides

ATTENTION = "[to_q,to_k,to_v,to_out.0]"
FULL = "[to_q,to_k,to_v,to_out.0,proj_in,proj_out,ff.net.0.proj,ff.net.2,conv1,conv2]"  # conf/backbone/toy.yaml
CASES = [("toy", None), ("sd15", ATTENTION), ("sd15", FULL), ("sdxl", ATTENTION), ("sdxl", FULL),
         ("pixart", ATTENTION), ("pixart", FULL), ("sd3", ATTENTION), ("sd3", FULL)]
PIPELINES = {"toy": "StableDiffusionPipeline", "sd15": "StableDiffusionPipeline",
             "sdxl": "StableDiffusionXLPipeline", "pixart": "PixArtAlphaPipeline", "sd3": "StableDiffusion3Pipeline"}
SEED = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_dir):
    """``trained(name, targets)``: (run dir, export dir, the trained student's images), built once."""
    runs = {}

    def get(name: str, targets: str | None):
        if (name, targets) not in runs:
            shards = [str(write_tiny_shard(tmp_path_factory.mktemp("shards")))]
            extra = [f"backbone.lora.targets={targets}"] if targets else []
            cfg = backbone_cfg(name, tiny_dir(name), *train_overrides(shards, "trainer.max_steps=2",
                                                                      "trainer.sample_nfe=[1]"), *extra)
            run = tmp_path_factory.mktemp(f"run-{name}") / "run"
            export_dir = train(cfg, run)
            _, module, _ = load_run(run)
            steps = json.loads((export_dir / "recipe.json").read_text())["steps"]
            student = sample_images(module.backbone, PROMPTS, True, steps, 0.0, seed=SEED, resolution=32)
            runs[(name, targets)] = (run, export_dir, student)
        return runs[(name, targets)]

    return get


def write_tiny_shard(directory):
    from tests.conftest import solid_samples, write_shard

    return write_shard(directory / "a.tar", solid_samples(8))


def plain_pipeline(name: str, teacher_dir, export_dir):
    """The family's diffusers pipeline from the teacher directory with the recipe's scheduler."""
    recipe = json.loads((export_dir / "recipe.json").read_text())
    # the tiny SD3 has no T5: diffusers' documented way to load it without one
    drop_t5 = {"text_encoder_3": None, "tokenizer_3": None} if name == "sd3" else {}
    pipe = getattr(diffusers, PIPELINES[name]).from_pretrained(teacher_dir, **drop_t5)
    sched = {k: v for k, v in recipe["scheduler"].items() if k != "class"}
    pipe.scheduler = getattr(diffusers, recipe["scheduler"]["class"]).from_config(pipe.scheduler.config, **sched)
    pipe.set_progress_bar_config(disable=True)
    return pipe, recipe["steps"]


def generate(pipe, name: str, steps: int) -> torch.Tensor:
    extra = {"use_resolution_binning": False, "clean_caption": False} if name == "pixart" else {}
    gens = [torch.Generator().manual_seed(SEED + i) for i in range(len(PROMPTS))]
    return pipe(prompt=PROMPTS, num_inference_steps=steps, guidance_scale=0.0, generator=gens, height=32,
                width=32, output_type="pt", **extra).images


def file_modules(path) -> int:
    """LoRA modules in a safetensors file: one down matrix each (PEFT, diffusers or kohya key names)."""
    with safe_open(str(path), framework="pt") as f:
        return sum(1 for k in f.keys() if k.endswith(("lora_A.weight", "lora.down.weight", "lora_down.weight")))


def attached(model) -> int:
    return sum(1 for m in model.modules() if isinstance(m, BaseTunerLayer))


def denoiser(pipe, name: str):
    return pipe.transformer if name in ("pixart", "sd3") else pipe.unet


@pytest.mark.parametrize(("name", "targets"), CASES, ids=[f"{n}-{'full' if t != ATTENTION else 'attn'}"
                                                          for n, t in CASES])
def test_plain_diffusers_loads_the_whole_export(trained, tiny_dir, name, targets):
    run, export_dir, student = trained(name, targets)
    pipe, steps = plain_pipeline(name, tiny_dir(name), export_dir)
    if name == "pixart":  # PixArtAlphaPipeline has no LoRA loader: the PEFT adapter directory
        from peft import PeftModel

        assert not hasattr(pipe, "load_lora_weights")
        pipe.transformer = PeftModel.from_pretrained(pipe.transformer, str(export_dir))
        weights = export_dir / "adapter_model.safetensors"
    else:
        pipe.load_lora_weights(str(export_dir))
        weights = export_dir / "pytorch_lora_weights.safetensors"
    in_file, on = file_modules(weights), attached(denoiser(pipe, name))
    if targets != ATTENTION:  # the resnets / projections / feed-forwards are in the file too
        assert in_file > file_modules_matching(weights, ("to_q", "to_k", "to_v", "to_out.0"))
    diff = (generate(pipe, name, steps) - student).abs().max().item()
    print(f"{name} {weights.name}: {on} LoRA modules attached, {in_file} in the file; max |diff| {diff:.1e}")
    assert in_file > 0 and on == in_file
    assert diff <= 1e-5


def file_modules_matching(path, names: tuple[str, ...]) -> int:
    with safe_open(str(path), framework="pt") as f:
        return sum(1 for k in f.keys() if k.endswith(tuple(f"{n}.lora_A.weight" for n in names)))


@pytest.mark.parametrize(("name", "targets"), [c for c in CASES if c[0] in ("toy", "sd15", "sdxl")],
                         ids=lambda v: v if isinstance(v, str) and not v.startswith("[") else
                         ("attn" if v == ATTENTION else "full"))
def test_plain_diffusers_loads_the_whole_kohya_file(trained, tiny_dir, name, targets):
    run, export_dir, student = trained(name, targets)
    pipe, steps = plain_pipeline(name, tiny_dir(name), export_dir)
    pipe.load_lora_weights(str(export_dir), weight_name="flash_lora_kohya.safetensors")
    in_file, on = file_modules(export_dir / "flash_lora_kohya.safetensors"), attached(pipe.unet)
    diff = (generate(pipe, name, steps) - student).abs().max().item()
    print(f"{name} kohya: {on} LoRA modules attached, {in_file} in the file; max |diff| {diff:.1e}")
    assert in_file > 0 and on == in_file
    assert diff <= 1e-5


# ------------------------------------------------------------------------------------ a file that lacks modules
def trimmed_export(export_dir, tmp_path, drop: int = 3):
    """A copy of ``export_dir`` whose diffusers file lacks the weights of ``drop`` modules (metadata kept)."""
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    path = copy / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(path)
    modules = sorted(k.removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight"))
    gone = modules[:drop]
    save_file({k: v for k, v in state.items() if not k.startswith(tuple(f"{m}.lora_" for m in gone))}, path,
              metadata=metadata)
    return copy, len(modules), len(modules) - drop


def test_sample_and_evaluate_refuse_a_file_that_lacks_modules(trained, tmp_path):
    from flash_exp.backbones.lora_files import LoraLoadError
    from flash_exp.evaluate import RunPipelines
    from flash_exp.export import load_backbone_config
    from flash_exp.sample import build_sampler

    _, export_dir, _ = trained("toy", None)
    copy, whole, left = trimmed_export(export_dir, tmp_path)
    assert file_modules(copy / "pytorch_lora_weights.safetensors") == left
    with pytest.raises(LoraLoadError) as err:
        build_sampler(copy, [])
    assert f"holds {left} LoRA modules but the student has {whole}" in str(err.value)
    pipes = RunPipelines(load_backbone_config(copy), copy, torch.device("cpu"))
    with pytest.raises(LoraLoadError) as err:
        pipes.get("student")
    assert f"holds {left} LoRA modules but the student has {whole}" in str(err.value)


def test_a_file_whose_keys_load_in_part_is_refused_with_both_counts(trained, tmp_path):
    """The old export: attention keys renamed to ``lora.down`` / ``lora.up``, the others ``lora_A`` /
    ``lora_B``; diffusers converts by the first key and drops the attention modules."""
    from flash_exp.backbones.lora_files import LoraLoadError
    from flash_exp.sample import build_sampler

    _, export_dir, _ = trained("toy", None)
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    path = copy / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    state = load_file(path)
    renamed = {}
    for key, value in state.items():
        for name in ("to_q", "to_k", "to_v", "to_out.0"):
            key = key.replace(f"{name}.lora_A", f"{name}.lora.down").replace(f"{name}.lora_B", f"{name}.lora.up")
        renamed[key] = value
    save_file(renamed, path, metadata=metadata)
    whole = file_modules(export_dir / "pytorch_lora_weights.safetensors")
    attention = file_modules_matching(export_dir / "pytorch_lora_weights.safetensors",
                                      ("to_q", "to_k", "to_v", "to_out.0"))
    with pytest.raises(LoraLoadError) as err:
        build_sampler(copy, [])
    assert f"attached to {whole - attention} of the file's {whole} modules" in str(err.value)
