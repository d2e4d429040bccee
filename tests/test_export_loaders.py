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

from flash_exp.train import train
from flash_exp.training.samples import sample_images
from flash_exp.training.student import load_run
from tests.fixtures_train import PROMPTS, backbone_cfg, train_overrides

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
    teacher = generate(pipe, name, steps)
    if name == "pixart":  # PixArtAlphaPipeline has no LoRA loader: the PEFT adapter directory
        from peft import PeftModel

        assert not hasattr(pipe, "load_lora_weights")
        pipe.transformer = PeftModel.from_pretrained(pipe.transformer, str(export_dir))
        weights = export_dir / "adapter_model.safetensors"
    else:
        pipe.load_lora_weights(str(export_dir))
        weights = export_dir / "pytorch_lora_weights.safetensors"
        with safe_open(str(weights), framework="pt") as f:
            saved = json.loads(f.metadata()["lora_adapter_metadata"])
        targets_saved = next(v for k, v in saved.items() if k.endswith(".target_modules"))
        assert targets_saved == sorted(targets_saved)  # not a set's order: the same weights, the same file
    in_file, on = file_modules(weights), attached(denoiser(pipe, name))
    if targets != ATTENTION:  # the resnets / projections / feed-forwards are in the file too
        assert in_file > file_modules_matching(weights, ("to_q", "to_k", "to_v", "to_out.0"))
    diff = (generate(pipe, name, steps) - student).abs().max().item()
    print(f"{name} {weights.name}: {on} LoRA modules attached, {in_file} in the file; max |diff| {diff:.1e}")
    assert in_file > 0 and on == in_file
    assert diff <= 1e-5
    assert (teacher - student).abs().max().item() > 1e-4  # the trained LoRA changes the image (10x the tolerance)


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
def copied_export(export_dir, tmp_path):
    """A copy of ``export_dir``: (folder, its diffusers file, that file's tensors, its metadata)."""
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    path = copy / "pytorch_lora_weights.safetensors"
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    return copy, path, load_file(path), metadata


def trimmed_export(export_dir, tmp_path, drop: int = 3):
    """A copy of ``export_dir`` whose diffusers file lacks the weights of ``drop`` modules (metadata kept)."""
    copy, path, state, metadata = copied_export(export_dir, tmp_path)
    modules = sorted(k.removesuffix(".lora_A.weight") for k in state if k.endswith(".lora_A.weight"))
    gone = modules[:drop]
    save_file({k: v for k, v in state.items() if not k.startswith(tuple(f"{m}.lora_" for m in gone))}, path,
              metadata=metadata)
    return copy, len(modules), len(modules) - drop


def test_sample_and_evaluate_refuse_a_file_that_lacks_modules(trained, tmp_path):
    from flash_exp.backbones.lora_files import LoraLoadError
    from flash_exp.evaluation.run_models import RunPipelines
    from flash_exp.export import load_backbone_config
    from flash_exp.sample import build_sampler

    _, export_dir, _ = trained("toy", None)
    copy, whole, left = trimmed_export(export_dir, tmp_path)
    assert file_modules(copy / "pytorch_lora_weights.safetensors") == left
    with pytest.raises(LoraLoadError) as err:
        build_sampler(copy, [])
    print(f"sample: {err.value}")
    assert f"holds {left} LoRA modules but the student has {whole}" in str(err.value)
    pipes = RunPipelines(load_backbone_config(copy), copy, torch.device("cpu"))
    with pytest.raises(LoraLoadError) as err:
        pipes.get("student")
    print(f"evaluate: {err.value}")
    assert f"holds {left} LoRA modules but the student has {whole}" in str(err.value)


def test_a_file_whose_keys_load_in_part_is_refused_with_both_counts(trained, tmp_path):
    """The old export: attention keys renamed to ``lora.down`` / ``lora.up``, the others ``lora_A`` /
    ``lora_B``; diffusers converts by the first key and drops the attention modules."""
    from flash_exp.backbones.lora_files import LoraLoadError
    from flash_exp.sample import build_sampler

    _, export_dir, _ = trained("toy", None)
    copy, path, state, metadata = copied_export(export_dir, tmp_path)
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
    print(f"sample, mixed key forms: {err.value}")
    assert f"attached to {whole - attention} of the file's {whole} modules" in str(err.value)


# ------------------------------------------------------------------------------------ model card, kohya metadata, hub
def card_parts(card: str) -> tuple[dict, str]:
    """(YAML front matter, the python snippet) of a model card."""
    from omegaconf import OmegaConf

    _, header, body = card.split("---\n", 2)
    return OmegaConf.to_container(OmegaConf.create(header)), body.split("```python\n", 1)[1].split("```", 1)[0]


def fake_hub_snapshot(teacher_dir, cache, repo: str):
    """``teacher_dir`` copied into a hub cache as the snapshot of ``repo``: what a download leaves."""
    revision = "0" * 40
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(teacher_dir, repo_dir / "snapshots" / revision)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return repo_dir / "snapshots" / revision


def test_model_card_front_matter_and_a_snippet_that_runs_as_written(trained, tiny_dir, tmp_path):
    import subprocess
    import sys

    from flash_exp.export import model_card

    run, export_dir, _ = trained("toy", None)
    cfg, _, _ = load_run(run)
    snapshot = fake_hub_snapshot(tiny_dir("toy"), tmp_path / "hub", "flash-tests/tiny-sd")
    cfg.backbone.pretrained = str(snapshot)  # trained from a downloaded copy: the card names the hub id
    card = model_card(cfg, json.loads((export_dir / "recipe.json").read_text()), "samples.png")
    meta, snippet = card_parts(card)
    assert meta["base_model"] == "flash-tests/tiny-sd" and meta["library_name"] == "diffusers"
    assert meta["pipeline_tag"] == "text-to-image" and {"lora", "text-to-image"} <= set(meta["tags"])
    assert meta["license"] == "other"  # not a shipped teacher: its license is unknown here
    assert str(tmp_path) not in card and str(run) not in card
    folder = shutil.copytree(export_dir, tmp_path / "export")  # the snippet loads "." : run from the folder
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", snippet], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (folder / "flash.png").is_file()


def test_cards_of_the_shipped_teachers_name_their_hub_id_and_license():
    from flash_exp.config import validate
    from flash_exp.export import model_card, recipe
    from tests.conftest import compose

    expected = {"sd15": "creativeml-openrail-m", "sdxl": "openrail++", "pixart": "openrail++", "sd3": "other",
                "sd35": "other", "sd35_large": "other"}
    for name, license_ in expected.items():
        cfg = validate(compose([f"backbone={name}", "data.shards=[unused]"]))
        meta, snippet = card_parts(model_card(cfg, recipe(cfg, 10), None))
        assert meta["base_model"] == cfg.backbone.pretrained and meta["license"] == license_
        assert f"base = {cfg.backbone.pretrained!r}" in snippet
    toy = validate(compose(["backbone=toy"]))
    _, snippet = card_parts(model_card(toy, recipe(toy, 10), None))
    base = snippet.split("base = ", 1)[1].split("\n", 1)[0]
    assert "flash_exp" in base and eval(base, {"importlib": __import__("importlib.resources")}) == \
        toy.backbone.pretrained  # the toy teacher shipped in the package, on any machine


@pytest.mark.parametrize(("name", "version", "architecture"), [("toy", "sd_v1", "stable-diffusion-v1/lora"),
                                                               ("sdxl", "sdxl_base_v1-0",
                                                                "stable-diffusion-xl-v1-base/lora")])
def test_kohya_file_carries_the_metadata_kohya_loaders_read(trained, name, version, architecture):
    run, export_dir, _ = trained(name, None if name == "toy" else ATTENTION)
    with safe_open(str(export_dir / "flash_lora_kohya.safetensors"), framework="pt") as f:
        meta = f.metadata()
    recipe = json.loads((export_dir / "recipe.json").read_text())
    assert meta["ss_base_model_version"] == version and meta["modelspec.architecture"] == architecture
    assert meta["ss_network_module"] == "networks.lora"
    assert int(meta["ss_network_dim"]) == recipe["lora"]["rank"]
    assert float(meta["ss_network_alpha"]) == recipe["lora"]["alpha"]
    assert meta["ss_resolution"] == "(32, 32)" and meta["modelspec.resolution"] == "32x32"
    assert meta["ss_steps"] == "2"  # trained two steps


def test_push_to_hub_offline_fails_at_once(trained):
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    run, _, _ = trained("toy", None)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "flash_exp.export", f"run_dir={run}", "push_to_hub=me/flash-toy"],
                          cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "cannot push to the hub repository 'me/flash-toy': HF_HUB_OFFLINE is set" in proc.stderr
    assert elapsed < 60, f"took {elapsed:.1f}s"  # the interpreter and imports; no weight is loaded


def test_push_to_hub_without_network_fails_within_seconds(monkeypatch):
    import time

    from huggingface_hub import constants

    from flash_exp.backbones.hub import HubUnreachableError, require_hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # a closed port stands in for no network
    start = time.monotonic()
    with pytest.raises(HubUnreachableError, match="unreachable"):
        require_hub("push to the hub repository 'me/x'")
    assert time.monotonic() - start < 10


def test_push_to_hub_creates_the_repo_and_uploads_the_export_with_a_card_loading_from_it(trained, tmp_path,
                                                                                       monkeypatch):
    import huggingface_hub

    from flash_exp.backbones import hub
    from flash_exp.export import push_to_hub

    run, export_dir, _ = trained("toy", None)
    cfg, _, _ = load_run(run)
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    calls = []

    class FakeApi:
        def create_repo(self, repo_id, **kw):
            calls.append(("create_repo", repo_id, kw.get("exist_ok")))
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(self, *, repo_id, folder_path, **kw):
            calls.append(("upload_folder", repo_id, folder_path))

    monkeypatch.setattr(hub, "require_hub", lambda action: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert push_to_hub(copy, "me/flash-toy", cfg) == "https://huggingface.co/me/flash-toy"
    assert calls == [("create_repo", "me/flash-toy", True), ("upload_folder", "me/flash-toy", str(copy))]
    _, snippet = card_parts((copy / "README.md").read_text())
    assert "pipe.load_lora_weights('me/flash-toy')" in snippet


def test_the_task_evaluation_student_is_the_export_read_by_diffusers(trained, tmp_path):
    """Task runs are scored with the student alone (backbone and task); its LoRA is the export (diffusers' loader),
    which reproduces the checkpoint's student, and a file that lacks modules is refused."""
    from flash_exp.backbones.lora_files import LoraLoadError
    from flash_exp.training.student import load_exported_run

    run, export_dir, student = trained("toy", None)
    _, module = load_exported_run(run)
    steps = json.loads((export_dir / "recipe.json").read_text())["steps"]
    exported = sample_images(module.backbone, PROMPTS, True, steps, 0.0, seed=SEED, resolution=32)
    assert (exported - student).abs().max().item() <= 1e-5
    copy_run = shutil.copytree(run, tmp_path / "run", ignore=shutil.ignore_patterns("export"))
    trimmed, whole, left = trimmed_export(export_dir, tmp_path / "trim")
    shutil.copytree(trimmed, copy_run / "export")
    with pytest.raises(LoraLoadError) as err:
        load_exported_run(copy_run)
    print(f"evaluate, task run: {err.value}")
    assert f"holds {left} LoRA modules but the student has {whole}" in str(err.value)
