"""COCO prompt sets: deterministic caption choice, captions files, hashes and missing-file errors."""

from __future__ import annotations

import json

import pytest

from flash_exp.config import ConfigError
from flash_exp.metrics.benchmarks import available_benchmarks, build_prompt_set, load_benchmark
from flash_exp.metrics.coco import CocoFilesMissing, coco_prompt_set, load_annotations

pytest_plugins = ["tests.fixtures_eval"]

ANN, IMAGES = "annotations/captions_val2017.json", "val2017"


def test_one_seeded_caption_per_image_in_image_id_order(coco_root):
    files, captions = load_annotations(coco_root / ANN)
    a = coco_prompt_set("t", coco_root, ANN, IMAGES, 12, caption_seed=0)
    b = coco_prompt_set("t", coco_root, ANN, IMAGES, 12, caption_seed=0)
    c = coco_prompt_set("t", coco_root, ANN, IMAGES, 12, caption_seed=1)
    assert a.prompts == b.prompts and a.prompt_hash == b.prompt_hash
    assert a.prompt_hash != c.prompt_hash
    for image_id, prompt in zip(sorted(files), a.prompts, strict=True):
        assert prompt in captions[image_id] and "\n" not in prompt
    assert [f.name for f in a.reference_files] == [files[i] for i in sorted(files)]


def test_subset_and_reference_modes(coco_root):
    all_ref = coco_prompt_set("t", coco_root, ANN, IMAGES, 5, caption_seed=3, reference="all")
    selected = coco_prompt_set("t", coco_root, ANN, IMAGES, 5, caption_seed=3, reference="selected")
    assert len(all_ref.prompts) == 5 and all_ref.prompts == selected.prompts
    assert len(all_ref.reference_files) == 12 and len(selected.reference_files) == 5
    assert all_ref.reference_hash() != selected.reference_hash()
    with pytest.raises(ConfigError, match="num_images=13: at most 12"):
        coco_prompt_set("t", coco_root, ANN, IMAGES, 13)


def test_captions_file_gives_the_prompts_in_order(coco_root, tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("first caption\n\n  second   caption \nthird\n")
    prompt_set = coco_prompt_set("t", coco_root, ANN, IMAGES, 2, captions_file=str(path))
    assert prompt_set.prompts == ["first caption", "second caption"]
    assert len(prompt_set.reference_files) == 12
    with pytest.raises(ConfigError, match="num_images=4: at most 3"):
        coco_prompt_set("t", coco_root, ANN, IMAGES, 4, captions_file=str(path))


def test_missing_coco_files_name_the_paths_and_the_env_var(tmp_path, coco_root):
    with pytest.raises(CocoFilesMissing) as err:
        coco_prompt_set("coco2017_5k", tmp_path / "nowhere", ANN, IMAGES, 5)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / ANN) in message and "COCO_ROOT" in message and "coco2017_5k" in message
    broken = tmp_path / "broken"
    (broken / "annotations").mkdir(parents=True)
    (broken / IMAGES).mkdir()
    (broken / ANN).write_text((coco_root / ANN).read_text())
    with pytest.raises(CocoFilesMissing, match="12 of 12 reference images"):
        coco_prompt_set("coco2017_5k", broken, ANN, IMAGES, 5)


def test_shipped_benchmarks_load_and_build_on_the_fixture(coco_root, tmp_path):
    assert {"coco2017_5k", "coco2014_30k", "coco2014_10k", "toy"} <= set(available_benchmarks())
    cfg = load_benchmark("coco2017_5k", overrides={"num_images": 12})
    assert (cfg.eval_res, cfg.clip.model, cfg.clip.pretrained, cfg.features) == (256, "ViT-g-14",
                                                                                "laion2b_s12b_b42k", "inception")
    prompt_set = build_prompt_set(cfg, coco_root, tmp_path)
    assert len(prompt_set.prompts) == 12
    assert json.dumps(prompt_set.provenance)  # recorded in results as plain JSON
    assert load_benchmark("coco2014_30k").num_images == 30000
    assert load_benchmark("coco2014_10k").num_images == 10000


def test_further_draws_take_other_captions_of_the_annotations(coco_root):
    import collections

    _, captions = load_annotations(coco_root / ANN)
    every = collections.Counter(c for caps in captions.values() for c in caps)
    prompt_set = coco_prompt_set("t", coco_root, ANN, IMAGES, 5, caption_seed=3)
    (o0, first), (o1, second) = prompt_set.draw_prompts(2)
    assert (o0, o1) == (0, 5) and first == prompt_set.prompts
    used = collections.Counter(first) + collections.Counter(second)
    assert all(used[c] <= every[c] for c in used)  # no (image, caption) pair is taken twice
    assert sum(every.values()) == len(prompt_set.pool)  # the pool: every caption, the chosen ones first
    selected = coco_prompt_set("t", coco_root, ANN, IMAGES, 5, caption_seed=3, reference="selected")
    assert selected.draw_prompts(2) == [(0, selected.prompts)] * 2  # its reference is the chosen images
