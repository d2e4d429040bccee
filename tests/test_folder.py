"""data=folder and make_shards: caption layouts, skipped files, and the same stream as the shards."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
import webdataset as wds
from PIL import Image

from flash_exp.config import ConfigError, validate
from flash_exp.data.folder import FolderImageStream, scan_folder
from flash_exp.data.make_shards import main as make_shards_main
from flash_exp.data.webdataset import CaptionedImageStream
from tests.conftest import compose
from tests.own_data import LAYOUTS, make_folder


def take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


@pytest.fixture(scope="module", params=LAYOUTS)
def own(request, tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp(request.param), request.param)


def test_every_layout_gives_each_usable_image_its_caption_and_counts_the_rest(own):
    stream = FolderImageStream(own.root, 16, 4)
    items = list(stream.one_pass())
    expected = {rel: " ".join(c.split()) for rel, c in own.captions.items()}
    assert len(items) == len(expected) == 195
    assert stream.counters.skipped == len(own.broken) + len(own.uncaptioned) == 5
    by_key = {r.key: r.path.relative_to(own.root).as_posix() for r in scan_folder(own.root)}
    assert {by_key[i["key"]]: i["caption"] for i in items} == expected
    assert all(i["pixels"].shape == (3, 16, 16) for i in items)


def test_the_aesthetic_threshold_applies_to_folder_scores(tmp_path):
    own = make_folder(tmp_path / "f", "jsonl", count=40, broken=0, uncaptioned=0)
    stream = FolderImageStream(own.root, 16, 4, min_aesthetic_score=6.0)
    kept = list(stream.one_pass())
    assert len(kept) == sum(s >= 6.0 for s in own.scores.values())
    assert stream.counters.filtered == sum(s < 6.0 for s in own.scores.values())


def test_a_metadata_row_wins_over_a_same_name_caption(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("from the txt")
    with (tmp_path / "metadata.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["file_name", "text"], ["a.png", "from the  metadata"]])
    [record] = scan_folder(tmp_path)
    assert record.caption == "from the metadata"


@pytest.mark.parametrize("workers", [0, 2])
def test_the_folder_and_its_shards_give_the_same_batches_and_resume_alike(tmp_path, workers):
    from torch.utils.data import DataLoader

    own = make_folder(tmp_path / "f", "txt", count=120)
    summary = make_shards_main(["--src", str(own.root), "--out", str(tmp_path / "s"), "--shard-size", "30"])
    assert len(summary.shards) == 4

    def batches(stream, start, n):
        stream.start_batch = start
        it = iter(DataLoader(stream, batch_size=None, num_workers=workers))
        return [next(it) for _ in range(n)]

    def folder():
        return FolderImageStream(own.root, 16, 5, files_per_shard=30, seed=3, shuffle_buffer=50)

    def shards():
        return CaptionedImageStream([summary.pattern()], 16, 5, seed=3, shuffle_buffer=50)

    a, b = batches(folder(), 0, 30), batches(shards(), 0, 30)  # 150 samples: into the second epoch
    for x, y in zip(a, b, strict=True):
        assert x["captions"] == y["captions"] and torch.equal(x["pixels"], y["pixels"])
    assert int(a[-1]["skipped"]) > 0 and int(b[-1]["skipped"]) == 0
    tail = batches(folder(), 25, 5)
    assert [t["captions"] for t in tail] == [x["captions"] for x in a[25:]]


def test_make_shards_copies_the_images_and_reports_what_it_skipped(tmp_path, capsys):
    own = make_folder(tmp_path / "f", "json")
    summary = make_shards_main(["--src", str(own.root), "--out", str(tmp_path / "s")])
    printed = capsys.readouterr().out
    assert "wrote 195 samples in 1 shard(s)" in printed and "skipped 5 file(s)" in printed
    assert "3 undecodable image" in printed and "2 missing caption" in printed
    assert f"'data.shards=[\"{tmp_path / 's' / 'shard-000000.tar'}\"]'" in printed
    assert sorted(p.relative_to(own.root).as_posix() for p in summary.skipped["undecodable image"]) == own.broken
    samples = list(wds.WebDataset(str(summary.shards[0]), shardshuffle=False))
    assert len(samples) == 195
    by_name = {}
    for s in samples:
        ext = "png" if "png" in s else "jpg"
        by_name[s["__key__"]] = (s[ext], json.loads(s["json"]))
    for rel, caption in own.captions.items():
        data, meta = by_name[rel.rsplit(".", 1)[0].replace("img.", "img_")]
        assert data == (own.root / rel).read_bytes()
        assert meta == {"caption": " ".join(caption.split()), "aesthetic_score": own.scores[rel]}


def test_make_shards_resize_bounds_the_shorter_side(tmp_path):
    Image.new("RGB", (300, 200), (10, 20, 30)).save(tmp_path / "big.png")
    (tmp_path / "big.txt").write_text("a big image")
    Image.new("RGB", (50, 40)).save(tmp_path / "small.png")
    (tmp_path / "small.txt").write_text("a small image")
    summary = make_shards_main(["--src", str(tmp_path), "--out", str(tmp_path / "s"), "--resize", "100"])
    samples = {s["__key__"]: s for s in wds.WebDataset(str(summary.shards[0]), shardshuffle=False)}
    assert Image.open(io.BytesIO(samples["big"]["jpg"])).size == (150, 100)
    assert samples["small"]["png"] == (tmp_path / "small.png").read_bytes() and summary.resized == 1


def test_folder_config_names_the_key_and_what_is_allowed(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        validate(compose(["data=folder"]))
    with pytest.raises(ConfigError, match="data.root.*not a directory"):
        validate(compose(["data=folder", f"data.root={tmp_path / 'absent'}"]))
    with pytest.raises(ConfigError, match="data.kind.*allowed values are webdataset, folder"):
        validate(compose(["data.kind=zip"]))
    with pytest.raises(ConfigError, match="task.grid_shards"):
        validate(compose(["data=folder", f"data.root={tmp_path}", "backbone=sd15", "task=inpainting"]))
    cfg = validate(compose(["data=folder", f"data.root={tmp_path}"]))
    assert cfg.data.kind == "folder" and cfg.data.files_per_shard == 1000


def first_loss(run: Path) -> float:
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss/generator")]
    return float(rows[0]["loss/generator"]), float(rows[-1]["data/skipped_samples"])


@pytest.mark.slow
def test_a_folder_run_and_a_run_on_its_shards_start_with_the_same_loss(tmp_path, tiny_sd_dir):
    from flash_exp.train import train
    from tests.fixtures_train import tiny_train_cfg

    own = make_folder(tmp_path / "f", "csv")
    summary = make_shards_main(["--src", str(own.root), "--out", str(tmp_path / "s")])
    common = ("trainer.max_steps=10", "trainer.log_every=1", "data.shuffle_buffer=1000", "seed=5")
    folder_cfg = tiny_train_cfg(tiny_sd_dir, ["unused"], "data=folder", f"data.root={own.root}", *common)
    train(folder_cfg, tmp_path / "folder")
    train(tiny_train_cfg(tiny_sd_dir, [summary.pattern()], *common), tmp_path / "shards")
    folder_loss, folder_skipped = first_loss(tmp_path / "folder")
    shards_loss, shards_skipped = first_loss(tmp_path / "shards")
    assert folder_loss == shards_loss and folder_skipped == 5.0 and shards_skipped == 0.0


def test_the_latent_cache_of_a_folder_is_that_of_its_shards(tmp_path, tiny_sd_dir):
    from flash_exp.config import compose_train_config
    from flash_exp.data.cache_latents import write_cache

    own = make_folder(tmp_path / "f", "json", count=12, broken=1)  # image 7 broken, all captioned
    summary = make_shards_main(["--src", str(own.root), "--out", str(tmp_path / "s")])
    base = ["backbone=sd15", f"backbone.pretrained={tiny_sd_dir}", "backbone.resolution=32", "loss.distill.type=l2",
            "data.min_aesthetic_score=null"]
    from_folder = write_cache(compose_train_config([*base, "data=folder", f"data.root={own.root}"]),
                              tmp_path / "a", torch.device("cpu"))
    from_shards = write_cache(compose_train_config([*base, f"data.shards=[{summary.shards[0]}]"]),
                              tmp_path / "b", torch.device("cpu"))
    a = list(wds.WebDataset(str(from_folder[0]), shardshuffle=False))
    b = list(wds.WebDataset(str(from_shards[0]), shardshuffle=False))
    assert len(a) == len(b) == 11
    for x, y in zip(a, b, strict=True):
        assert x["__key__"] == y["__key__"] and x["json"] == y["json"] and x["pth"] == y["pth"]


def one_bad_file_among_nine(root: Path) -> Path:
    """Eight captioned solid images and one undecodable file, first in path order (read first in every pass)."""
    root.mkdir(parents=True)
    for i in range(8):
        Image.new("RGB", (16, 16), (30 * i, 20, 200)).save(root / f"img{i}.png")
        (root / f"img{i}.txt").write_text(f"image {i}")
    (root / "0_bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (root / "0_bad.txt").write_text("a broken image")
    return root / "0_bad.jpg"


def test_a_bad_file_met_in_two_passes_is_two_skipped_samples_from_one_file(tmp_path):
    bad = one_bad_file_among_nine(tmp_path / "f")
    stream = FolderImageStream(tmp_path / "f", 16, 2, shuffle_buffer=4)
    batches = take(stream, 6)  # 12 samples: the 8 usable images once, then 4 of the second pass
    assert int(batches[-1]["skipped"]) == 2
    names = [name for b in batches for name in b["skipped_new"]]
    assert names == [str(bad)]  # handed over once, with the first batch after it was met


@pytest.mark.slow
def test_a_run_logs_skipped_samples_and_files_and_a_run_shorter_than_log_every_has_metrics(tmp_path, tiny_sd_dir,
                                                                                           caplog):
    from flash_exp.train import train
    from tests.fixtures_train import tiny_train_cfg

    one_bad_file_among_nine(tmp_path / "f")
    cfg = tiny_train_cfg(tiny_sd_dir, ["unused"], "data=folder", f"data.root={tmp_path / 'f'}", "data.batch_size=2",
                         "trainer.max_steps=6", "trainer.log_every=50")
    with caplog.at_level("INFO", logger="flash_exp.train"):
        train(cfg, tmp_path / "run")
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss/generator")]
    assert [int(r["step"]) for r in rows] == [5]  # the last step (Lightning counts from 0)
    assert float(rows[-1]["data/skipped_samples"]) == 2.0 and float(rows[-1]["data/skipped_files"]) == 1.0
    assert "data: 2 samples skipped from 1 distinct files" in caplog.text


def _captioned_images(folder: Path, count: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(folder / f"img_{i:02d}.png")
        (folder / f"img_{i:02d}.txt").write_text(f"image {i}")
    return folder


def test_make_shards_refuses_an_out_that_holds_shards_and_overwrite_leaves_only_the_new_ones(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    first, second, out = (_captioned_images(tmp_path / "a", 40), _captioned_images(tmp_path / "b", 8),
                          tmp_path / "shards")
    make_shards_main(["--src", str(first), "--out", str(out), "--shard-size", "20"])
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "flash_exp.data.make_shards", "--src", str(second), "--out",
                           str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "shard-000000.tar, shard-000001.tar" in line and "--overwrite" in line
    assert len(list(wds.WebDataset(str(out / "shard-000001.tar"), shardshuffle=False))) == 20  # untouched

    summary = make_shards_main(["--src", str(second), "--out", str(out), "--overwrite"])
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar"]
    keys = {s["__key__"] for s in wds.WebDataset(str(out / "shard-000000.tar"), shardshuffle=False)}
    assert keys == {f"img_{i:02d}" for i in range(8)} and summary.written == 8
    record = json.loads((out / "make_shards.json").read_text())
    assert record["src"] == str(second) and record["written"] == 8
