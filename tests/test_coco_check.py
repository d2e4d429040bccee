"""python -m flash_exp.data.coco check on a fake COCO tree: what is present, what is missing."""

from __future__ import annotations

from flash_exp.data.coco import main
from tests.fixtures_eval import fake_coco


def test_a_complete_val2017_and_a_partial_val2014(tmp_path, capsys):
    fake_coco(tmp_path, "val2017", 5000, annotated=5000)
    fake_coco(tmp_path, "val2014", 12)
    code = main(["check", f"root={tmp_path}", "eval=paper"])
    out = capsys.readouterr().out
    assert code == 1
    block_2017 = out.split("coco2017_5k:")[1].split("coco2014_30k:")[0]
    assert "annotations_trainval2017" not in out and "val2017.zip" not in out
    assert "present, 5,000 of 5,000 images" in block_2017 and "-> ready" in block_2017
    block_2014 = out.split("coco2014_30k:")[1]
    assert f"{tmp_path}/annotations/captions_val2014.json: MISSING" in block_2014
    assert "INCOMPLETE, 12 of 40,504 images" in block_2014
    assert (f"wget -c http://images.cocodataset.org/annotations/annotations_trainval2014.zip && unzip -o "
            f"annotations_trainval2014.zip 'annotations/captions_*' -d {tmp_path}") in out
    assert f"wget -c http://images.cocodataset.org/zips/val2014.zip && unzip -qo val2014.zip -d {tmp_path}" in out


def test_annotated_images_absent_from_the_folder_are_counted(tmp_path, capsys):
    fake_coco(tmp_path, "val2017", 4990, annotated=5000)
    assert main(["check", f"root={tmp_path}", "eval=coco2017_5k"]) == 1
    out = capsys.readouterr().out
    assert "INCOMPLETE, 4,990 of 5,000 images, 10 annotated images absent" in out
    assert "zips/val2017.zip" in out and "annotations_trainval2017" not in out


def test_an_empty_root_misses_everything_and_the_toy_needs_nothing(tmp_path, capsys):
    assert main(["check", f"root={tmp_path}", "eval=paper"]) == 1
    out = capsys.readouterr().out
    assert out.count("MISSING") == 4 and out.count("wget") == 4
    assert main(["check", f"root={tmp_path}", "eval=toy"]) == 0
    assert "toy: needs no COCO files" in capsys.readouterr().out


def test_an_unknown_eval_names_the_allowed_values(tmp_path, capsys):
    assert main(["check", f"root={tmp_path}", "eval=coco"]) == 2
    assert "invalid config value eval='coco': allowed values are coco2014_10k, coco2014_30k" in capsys.readouterr().err
