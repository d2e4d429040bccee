"""python -m flash_exp.prefetch: the list per config, fetching through the libraries, offline.env,
and a run trained and evaluated from the cache alone with the network disabled."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flash_exp.config import compose_train_config
from flash_exp.prefetch import main, plan

REPO = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"
CLIP_REPO = "laion/CLIP-ViT-g-14-laion2B-s12B-b42K"


def listed(overrides: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    items, coco = plan(compose_train_config(overrides))
    return [(i.what, i.name) for i in items], coco


def test_the_lists_of_three_configurations():
    assert listed(["backbone=sd15", "eval=paper"]) == ([
        ("teacher", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
        ("VGG16 (LPIPS)", "torchvision vgg16-397923af.pth"),
        ("FID Inception", "clean-fid inception-2015-12-05.pt"),
        ("CLIP", "open_clip ViT-g-14 laion2b_s12b_b42k"),
    ], ["coco2017_5k", "coco2014_30k"])
    assert listed(["backbone=sdxl", "task=inpainting"]) == ([
        ("teacher", "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
        ("VGG16 (LPIPS)", "torchvision vgg16-397923af.pth"),
    ], [])
    assert listed(["backbone=sd3"]) == ([
        ("teacher", "stabilityai/stable-diffusion-3-medium-diffusers"),
        ("VGG16 (LPIPS)", "torchvision vgg16-397923af.pth"),
    ], [])
    assert listed(["backbone=sdxl", "task=adapter_canny", "loss.distill.type=l2"])[0] == [
        ("teacher", "stabilityai/stable-diffusion-xl-base-1.0"),
        ("task model (T2I-Adapter)", "TencentARC/t2i-adapter-canny-sdxl-1.0"),
    ]


def test_dry_run_prints_the_list_and_a_bad_value_names_its_key(tmp_path, capsys):
    assert main(["--dry-run", "--cache", str(tmp_path), "backbone=sdxl", "task=inpainting"]) == 0
    out = capsys.readouterr().out
    assert "diffusers/stable-diffusion-xl-1.0-inpainting-0.1" in out and "527.8 MB" in out
    assert out.count("missing") == 2 and not (tmp_path / "offline.env").exists()
    assert main(["--dry-run", "--cache", str(tmp_path), "loss.distill.type=ssim"]) == 2
    assert "invalid config value loss.distill.type='ssim': allowed values are l2, l1, lpips" in capsys.readouterr().err


def in_hub_cache(hub: Path, repo: str, files: dict[str, Path | bytes]) -> Path:
    """Put ``files`` (relative name -> a file or directory to copy, or bytes) into the hub cache layout."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / REVISION
    for name, source in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            target.write_bytes(source)
        elif source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        else:
            shutil.copy(source, target)
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(REVISION)
    return snapshot


def sourced(env_file: Path, names: list[str]) -> dict[str, str]:
    script = f"source {env_file} && " + " && ".join(f'echo "{n}=${n}"' for n in names)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def test_everything_present_fetches_nothing_and_writes_offline_env(tmp_path, tiny_sd_dir, capsys):
    cache = tmp_path / "cache"
    hub = cache / "huggingface" / "hub"
    in_hub_cache(hub, "stable-diffusion-v1-5/stable-diffusion-v1-5", {".": tiny_sd_dir})
    clip = in_hub_cache(hub, CLIP_REPO, {"open_clip_pytorch_model.bin": b"stand-in"}) / "open_clip_pytorch_model.bin"
    vgg = cache / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"
    inception = cache / "cleanfid" / "inception-2015-12-05.pt"
    for path in (vgg, inception):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"stand-in")
    assert main(["--cache", str(cache), "backbone=sd15", "eval=paper"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert not any(line.startswith("fetching") for line in out)
    assert [line.split()[-1] for line in out[2:6]] == ["present"] * 4
    env = sourced(cache / "offline.env", ["HF_HUB_OFFLINE", "HF_HUB_CACHE", "TORCH_HOME", "FLASH_EXP_INCEPTION",
                                          "FLASH_EXP_CLIP_WEIGHTS"])
    assert env == {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub), "TORCH_HOME": str(cache / "torch"),
                   "FLASH_EXP_INCEPTION": str(inception), "FLASH_EXP_CLIP_WEIGHTS": str(clip)}
    moved = tmp_path / "elsewhere"
    shutil.move(cache, moved)
    script = f"export FLASH_EXP_CACHE={moved} && source {moved / 'offline.env'} && echo $FLASH_EXP_INCEPTION"
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(moved / "cleanfid" / "inception-2015-12-05.pt")


def test_missing_items_are_fetched_with_the_libraries_functions(tmp_path, monkeypatch, tiny_sd_dir):
    import cleanfid.downloads_helper
    import diffusers
    import huggingface_hub
    import open_clip
    from torchvision.models import VGG16_Weights

    cache = tmp_path / "cache"
    hub = cache / "huggingface" / "hub"
    calls = []

    def pipeline_download(name, revision=None, variant=None, cache_dir=None):
        calls.append(("DiffusionPipeline.download", name, Path(cache_dir)))
        return str(in_hub_cache(Path(cache_dir), name, {".": tiny_sd_dir}))

    def snapshot(name, cache_dir=None, allow_patterns=None, **kw):
        if kw.get("local_files_only"):
            return real_snapshot(name, cache_dir=cache_dir, **kw)
        calls.append(("snapshot_download", name, allow_patterns))
        return str(in_hub_cache(Path(cache_dir), name, {"model_index.json": b"{}", "adapter/config.json": b"{}"}))

    def clip_download(cfg, cache_dir=None):
        calls.append(("open_clip.download_pretrained", cfg["hf_hub"], Path(cache_dir)))
        return str(in_hub_cache(Path(cache_dir), CLIP_REPO, {"open_clip_pytorch_model.bin": b"w"})
                   / "open_clip_pytorch_model.bin")

    def inception_download(local_folder, url):
        calls.append(("check_download_url", url))
        (Path(local_folder) / "inception-2015-12-05.pt").write_bytes(b"w")
        return str(Path(local_folder) / "inception-2015-12-05.pt")

    def vgg_download(self, progress=True, model_dir=None, check_hash=False):
        calls.append(("VGG16_Weights.get_state_dict", self.url, check_hash))
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        (Path(model_dir) / "vgg16-397923af.pth").write_bytes(b"w")

    real_snapshot = huggingface_hub.snapshot_download
    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", staticmethod(pipeline_download))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(open_clip, "download_pretrained", clip_download)
    monkeypatch.setattr(cleanfid.downloads_helper, "check_download_url", inception_download)
    monkeypatch.setattr(type(VGG16_Weights.IMAGENET1K_V1), "get_state_dict", vgg_download)

    assert main(["--cache", str(cache), "backbone=sd15", "eval=coco2017_5k"]) == 0
    assert calls == [
        ("DiffusionPipeline.download", "stable-diffusion-v1-5/stable-diffusion-v1-5", hub),
        ("VGG16_Weights.get_state_dict", "https://download.pytorch.org/models/vgg16-397923af.pth", True),
        ("check_download_url",
         "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"),
        ("open_clip.download_pretrained", CLIP_REPO + "/", hub),
    ]
    calls.clear()
    assert main(["--cache", str(cache), "backbone=sdxl", "task=adapter_canny", "loss.distill.type=l2",
                 "task.adapter.pretrained=TencentARC/t2i-adapter-canny-sdxl-1.0", "task.adapter.subfolder=adapter"]) == 0
    assert ("snapshot_download", "TencentARC/t2i-adapter-canny-sdxl-1.0", ["adapter/*"]) in calls
    assert (cache / "offline.env").is_file()


def _network_off() -> list[str]:
    """``unshare -rn``: the command runs in a network namespace with no interface but loopback."""
    try:
        subprocess.run(["unshare", "-rn", "true"], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("unshare -rn (a user network namespace) is not available here")
    return ["unshare", "-rn"]


@pytest.mark.slow
def test_train_and_evaluate_offline_from_the_prefetched_cache(tmp_path, tiny_sd_dir):
    """The sd15 teacher as a tiny stand-in in the hub cache; prefetch writes offline.env; train and
    evaluate (the toy benchmark, which needs no download) run with the network disabled."""
    from tests.fixtures_eval import write_toy_shards

    cache = tmp_path / "cache"
    in_hub_cache(cache / "huggingface" / "hub", "stable-diffusion-v1-5/stable-diffusion-v1-5", {".": tiny_sd_dir})
    run = tmp_path / "run"
    train_args = ["backbone=sd15", "backbone.resolution=32", "backbone.lora.rank=4", "backbone.lora.alpha=4",
                  "backbone.teacher_sampling.steps=2", "loss.distill.type=l2", "data.batch_size=2",
                  "phases.k=[4,4,4,4]", "phases.iterations=[1,1,1,1]", "trainer.accelerator=cpu",
                  "trainer.max_steps=2", "trainer.sample_every=0", "eval=toy"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    prefetch = [sys.executable, "-m", "flash_exp.prefetch", "--cache", str(cache), *train_args]
    assert subprocess.run(prefetch, cwd=REPO, env=env, capture_output=True, text=True).returncode == 0
    train = [sys.executable, "-m", "flash_exp.train", *train_args, f"hydra.run.dir={run}"]
    evaluate = [sys.executable, "-m", "flash_exp.evaluate", f"run_dir={run}", "device=cpu", "batch_size=4",
                "student_nfe=[1]", "teacher_nfe=[]", "teacher_full=false", f"cache_dir={tmp_path / 'eval'}",
                "eval.benchmarks=[toy]", "+eval.options.toy.num_images=8", f"+eval.options.toy.toy.shards=[{','.join(write_toy_shards(tmp_path / 'toy'))}]"]
    for command in (train, evaluate):
        script = f"source {cache / 'offline.env'} && exec " + " ".join(f"'{a}'" for a in command)
        done = subprocess.run([*_network_off(), "bash", "-c", script], cwd=REPO, capture_output=True, text=True,
                              env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "export" / "pytorch_lora_weights.safetensors").is_file()
    assert (run / "eval" / "toy" / "student_nfe1.json").is_file()


def test_what_cannot_be_fetched_fails_and_writes_no_env(tmp_path, capsys):
    code = main(["--cache", str(tmp_path), "backbone=sd15", "loss.distill.type=l2"])  # HF_HUB_OFFLINE=1 here
    captured = capsys.readouterr()
    assert code == 1 and "FAILED" in captured.out
    assert "error: teacher stable-diffusion-v1-5/stable-diffusion-v1-5:" in captured.err
    assert not (tmp_path / "offline.env").exists()


def test_a_dry_run_of_sd3_says_its_repository_is_gated_and_what_to_do(tmp_path, capsys):
    assert main(["--dry-run", "--cache", str(tmp_path), "backbone=sd3"]) == 0
    out = capsys.readouterr().out
    assert "stabilityai/stable-diffusion-3-medium-diffusers is gated" in out and "hf auth login" in out
    assert main(["--dry-run", "--cache", str(tmp_path), "backbone=sd35"]) == 0
    assert "stabilityai/stable-diffusion-3.5-medium is gated" in capsys.readouterr().out
    assert main(["--dry-run", "--cache", str(tmp_path), "backbone=sd15"]) == 0
    assert "gated" not in capsys.readouterr().out
