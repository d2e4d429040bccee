"""The shared teacher-baseline cache is keyed by the teacher's weights, not only by its name."""

from __future__ import annotations

import shutil

from flash_exp.config import BackboneConfig


def test_a_teacher_rebuilt_in_place_gets_a_new_identity(tmp_path, tiny_sd_dir):
    from safetensors.torch import load_file, save_file

    from flash_exp.evaluation.run_models import teacher_identity
    from flash_exp.metrics.hashing import MEMO_FILE

    teacher = shutil.copytree(tiny_sd_dir, tmp_path / "teacher")
    backbone = BackboneConfig(pretrained=str(teacher))
    before = teacher_identity(backbone)
    weights = next((teacher / "unet").glob("*.safetensors"))
    state = load_file(weights)
    save_file({k: v + 1 for k, v in state.items()}, weights)  # rebuilt in place: same path, new weights
    after = teacher_identity(backbone)
    assert after["pretrained"] == before["pretrained"] and after != before
    memo = tmp_path / "cache"  # the file digests are remembered: an unchanged teacher is not read again
    assert teacher_identity(backbone, memo) == after and (memo / MEMO_FILE).is_file()
