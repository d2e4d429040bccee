"""Which config changes make a finished run out of date."""

from __future__ import annotations

from flash_exp.config import validate
from flash_exp.training.completion import evaluation_fingerprint, training_fingerprint
from tests.conftest import compose


def test_cadences_and_trackers_keep_a_run_up_to_date_and_the_recipe_does_not():
    base = validate(compose([]))
    same = validate(compose(["trainer.log_every=3", "trainer.keep_checkpoints=2", "logger=csv"]))
    longer = validate(compose(["trainer.max_steps=3"]))
    assert training_fingerprint(base) == training_fingerprint(same)
    assert training_fingerprint(base) != training_fingerprint(longer)
    other_eval = validate(compose(["+eval.settings.student_nfe=[1]"]))
    assert training_fingerprint(base) == training_fingerprint(other_eval)
    assert evaluation_fingerprint(base) != evaluation_fingerprint(other_eval)
