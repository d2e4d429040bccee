"""The webdataset pipeline: filtering, skipping and counting, determinism and resume position."""

from __future__ import annotations

import torch
from PIL import Image

from flash_exp.data.webdataset import CaptionedImageStream, image_to_tensor
from tests.conftest import solid_samples, write_shard


def take(stream, n):
    it = iter(stream)
    return [next(it) for _ in range(n)]


def test_image_to_tensor_centre_crops_and_scales():
    image = Image.new("RGB", (60, 40), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 40))  # a blue band on the left, cropped away
    x = image_to_tensor(image, 16)
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x[0], torch.ones(16, 16), atol=1e-2) and x.min() >= -1.0 and x.max() <= 1.0


def test_aesthetic_filter_and_counts(tmp_path):
    shard = write_shard(tmp_path / "a.tar", solid_samples(12))  # scores 5, 6, 7, 8 repeating
    stream = CaptionedImageStream([str(shard)], 16, 3, shuffle_buffer=1, min_aesthetic_score=6.5)
    batches = take(stream, 2)
    assert all(b["pixels"].shape == (3, 3, 16, 16) for b in batches)
    assert int(batches[-1]["filtered"]) == 6 and int(batches[-1]["skipped"]) == 0


def test_corrupt_and_captionless_samples_are_counted(tmp_path):
    good = solid_samples(6)
    bad = [{"key": "x1", "jpg": b"not an image", "json": {"caption": "a red square"}},
           {"key": "x2", "image": good[0]["image"], "json": {"aesthetic_score": 9}},
           {"key": "x3", "image": good[0]["image"], "json": b"{broken json"}]
    shard = write_shard(tmp_path / "a.tar", good[:3] + bad + good[3:])
    batches = take(CaptionedImageStream([str(shard)], 16, 6, shuffle_buffer=1), 1)
    assert int(batches[0]["skipped"]) == 3
    assert len(batches[0]["captions"]) == 6


def test_stream_is_deterministic_and_resumes_at_its_position(tmp_path):
    shards = [str(write_shard(tmp_path / f"s{i}.tar", solid_samples(10, 10 * i))) for i in range(3)]
    full = take(CaptionedImageStream(shards, 16, 4, seed=3, shuffle_buffer=8), 6)
    again = take(CaptionedImageStream(shards, 16, 4, seed=3, shuffle_buffer=8), 6)
    assert [b["captions"] for b in full] == [b["captions"] for b in again]
    resumed = CaptionedImageStream(shards, 16, 4, seed=3, shuffle_buffer=8)
    resumed.start_batch = 4
    tail = take(resumed, 2)
    for a, b in zip(full[4:], tail, strict=True):
        assert a["captions"] == b["captions"] and torch.equal(a["pixels"], b["pixels"])
    other = take(CaptionedImageStream(shards, 16, 4, seed=4, shuffle_buffer=8), 6)
    assert [b["captions"] for b in other] != [b["captions"] for b in full]


def test_resume_position_with_two_workers(tmp_path):
    from torch.utils.data import DataLoader

    shards = [str(write_shard(tmp_path / f"s{i}.tar", solid_samples(8, 8 * i))) for i in range(4)]

    def loader(start):
        stream = CaptionedImageStream(shards, 16, 2, seed=0, shuffle_buffer=4)
        stream.start_batch = start
        return iter(DataLoader(stream, batch_size=None, num_workers=2))

    it = loader(0)
    full = [next(it)["captions"] for _ in range(8)]
    it = loader(5)
    assert [next(it)["captions"] for _ in range(3)] == full[5:]


def test_missing_shards_raise_instead_of_looping(tmp_path):
    import pytest

    stream = CaptionedImageStream([str(tmp_path / "missing.tar")], 16, 2)
    with pytest.raises(FileNotFoundError, match="no readable sample"):
        take(stream, 1)


def test_brace_patterns_name_one_shard_per_expansion(tmp_path):
    for i in range(3):
        write_shard(tmp_path / f"s{i:03d}.tar", solid_samples(2, 2 * i))
    stream = CaptionedImageStream([str(tmp_path / "s{000..002}.tar")], 16, 6, shuffle_buffer=1)
    assert stream.shards == [str(tmp_path / f"s{i:03d}.tar") for i in range(3)]
    [batch] = take(stream, 1)
    assert batch["pixels"].shape == (6, 3, 16, 16) and int(batch["skipped"]) == 0


def test_a_pass_without_usable_samples_stops_naming_the_setting(tmp_path):
    import pytest

    from flash_exp.data.stream_counters import DataStreamError

    shard = write_shard(tmp_path / "a.tar", solid_samples(6))
    stream = CaptionedImageStream([str(shard)], 16, 2, shuffle_buffer=1, image_keys="png")
    with pytest.raises(DataStreamError, match=r"no usable sample.*6 missing image \(data.image_key\)"):
        take(stream, 1)
    stream = CaptionedImageStream([str(shard)], 16, 2, shuffle_buffer=1, min_aesthetic_score=100)
    with pytest.raises(DataStreamError, match=r"6 under the aesthetic threshold \(data.min_aesthetic_score\)"):
        take(stream, 1)


def test_consecutive_rejections_stop_the_stream_with_counts(tmp_path):
    import pytest

    from flash_exp.data.stream_counters import DataStreamError

    captionless = [{"key": f"n{i}", "image": s["image"], "json": {}} for i, s in enumerate(solid_samples(8))]
    shard = write_shard(tmp_path / "a.tar", solid_samples(2) + captionless + solid_samples(2, 2))
    stream = CaptionedImageStream([str(shard)], 16, 4, shuffle_buffer=1, max_consecutive_rejects=5)
    with pytest.raises(DataStreamError, match=r"5 candidate samples in a row.*5 missing caption \(data.caption_key\)"):
        take(stream, 1)
    # under the limit, the same shard streams on
    batch = take(CaptionedImageStream([str(shard)], 16, 4, shuffle_buffer=1, max_consecutive_rejects=9), 1)[0]
    assert int(batch["skipped"]) == 8


def test_command_urls_are_refused_unless_allowed(tmp_path):
    import pytest

    from flash_exp.config import ConfigError, validate
    from tests.conftest import compose

    shard = write_shard(tmp_path / "a.tar", solid_samples(4))
    marker = tmp_path / "command-ran"
    url = f"pipe:touch {marker}; cat {shard}"
    with pytest.raises(ConfigError, match=r"data.shards=.*shell command.*data.allow_command_urls=true"):
        take(CaptionedImageStream([url], 16, 2, shuffle_buffer=1), 1)
    with pytest.raises(ConfigError, match="data.shards"):
        validate(compose([f"data.shards=['{url}']"]))
    assert not marker.exists()
    allowed = CaptionedImageStream([url], 16, 2, shuffle_buffer=1, allow_command_urls=True)
    assert take(allowed, 1)[0]["pixels"].shape == (2, 3, 16, 16) and marker.exists()


def test_truncated_shards_are_counted_at_shard_level(tmp_path):
    import tarfile

    full = write_shard(tmp_path / "full.tar", solid_samples(16))
    data = full.read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: int(len(data) * 0.4)])  # mid-archive
    with tarfile.open(full) as tar:
        member = tar.getmembers()[9]
    boundary = tmp_path / "boundary.tar"  # cut right after a member: tar readers see a clean end
    boundary.write_bytes(data[: member.offset_data + -(-member.size // 512) * 512])
    stream = CaptionedImageStream([str(cut), str(boundary), str(full), str(tmp_path / "missing.tar")], 16, 2,
                                  shuffle_buffer=1)
    batch = take(stream, 20)[-1]  # more than one pass over the shards: each is counted once
    assert int(batch["shards_truncated"]) == 2 and int(batch["shards_unreadable"]) == 1
    assert int(batch["skipped"]) == 0  # no sample-level skip was counted for a shard-level problem
