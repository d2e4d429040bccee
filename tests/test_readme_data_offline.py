"""The README's "Your own data" and "Offline clusters" sections, tried command by command: the paths
they name are replaced by a test folder, a fake COCO tree and a cache folder; `train` and `evaluate`
commands are composed and validated (nothing is trained), the others run."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from flash_exp.config import compose_train_config
from tests.fixtures_eval import fake_coco
from tests.own_data import make_folder

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def commands(title: str) -> list[list[str]]:
    """The command lines of the section's ```bash blocks, split as the shell would."""
    blocks = section(title).split("```bash\n")[1:]
    lines = [line for block in blocks for line in block.split("```")[0].splitlines()]
    return [shlex.split(line) for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture
def places(tmp_path) -> dict[str, str]:
    own = make_folder(tmp_path / "images", "jsonl")
    coco = tmp_path / "coco"
    fake_coco(coco, "val2017", 5000, annotated=5000)
    return {"/data/my-images": str(own.root), "/data/my-shards": str(tmp_path / "shards"),
            "/scratch/flash-cache": str(tmp_path / "cache"), "/data/coco": str(coco)}


def substituted(argv: list[str], places: dict[str, str]) -> list[str]:
    out = []
    for arg in argv:
        for name, path in places.items():
            arg = arg.replace(name, path)
        out.append(arg)
    return out


def run(argv: list[str], capsys) -> tuple[int, str]:
    """One README command; returns its exit code and what it printed."""
    if argv[:2] == ["python", "-m"]:
        module, args = argv[2], argv[3:]
    else:
        assert argv[0] == "source" and argv[1].endswith("offline.env"), argv
        return 0, ""
    if module == "flash_exp.train":
        cfg = compose_train_config(args)  # validated as train would, before any weight loads
        return 0, OmegaConf.to_yaml(OmegaConf.structured(cfg))
    if module == "flash_exp.evaluate":
        from tests.fixtures_eval import compose_evaluate

        OmegaConf.to_object(compose_evaluate(args))  # the schema's checks
        return 0, ""
    if module == "flash_exp.data.make_shards":
        from flash_exp.data.make_shards import main

        main(args)
        return 0, capsys.readouterr().out
    if module == "flash_exp.data.coco":
        from flash_exp.data.coco import main

        return main(args), capsys.readouterr().out
    if module == "flash_exp.prefetch":
        from flash_exp.prefetch import main

        # fetching needs the network: the command is tried as its listing (test_prefetch fetches)
        return main(args if "--dry-run" in args else ["--dry-run", *args]), capsys.readouterr().out
    raise AssertionError(f"the README names a command this test does not know: {argv}")


def test_your_own_data_section(places, capsys):
    argv = [substituted(a, places) for a in commands("Your own data")]
    assert [a[2] for a in argv] == ["flash_exp.train", "flash_exp.data.make_shards", "flash_exp.train"]
    code, config = run(argv[0], capsys)
    assert code == 0 and f"root: {places['/data/my-images']}" in config
    code, printed = run(argv[1], capsys)
    assert "wrote 195 samples in 1 shard(s)" in printed and "3 undecodable image" in printed
    assert (Path(places["/data/my-shards"]) / "shard-000000.tar").is_file()
    shown = [line[2:] for line in section("Your own data").split("  ```\n")[1].splitlines()]
    for name, path in places.items():
        printed = printed.replace(path, name)
    assert printed.splitlines()[-len(shown):] == shown  # after make_shards' progress bar
    code, config = run(argv[2], capsys)
    assert code == 0 and "shard-000000.tar" in config


def test_offline_clusters_section(places, capsys):
    argv = [substituted(a, places) for a in commands("Offline clusters")]
    modules = [a[2] if a[0] == "python" else a[0] for a in argv]
    assert modules == ["flash_exp.prefetch", "flash_exp.prefetch", "flash_exp.data.coco", "source",
                       "flash_exp.train", "flash_exp.evaluate"]
    outputs = [run(a, capsys) for a in argv]
    assert outputs[0][0] == 0 and "diffusers/stable-diffusion-xl-1.0-inpainting-0.1" in outputs[0][1]
    assert outputs[2][0] == 1  # the fake tree holds val2017 only
    assert "coco2017_5k:" in outputs[2][1] and "zips/val2014.zip" in outputs[2][1]
    listing = section("Offline clusters").split("backbone=sd15 eval=paper`:\n\n```\n")[1].split("```")[0]
    code, printed = run(["python", "-m", "flash_exp.prefetch", "--dry-run", "--cache", places["/scratch/flash-cache"],
                         "backbone=sd15", "eval=paper"], capsys)
    assert code == 0 and printed.splitlines()[1:] == listing.strip().splitlines()
