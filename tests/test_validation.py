"""Values that used to pass validation and cost a run: each fails at composition, naming its key."""

from __future__ import annotations

import pytest

from flash_exp.config import ConfigError, validate
from tests.conftest import compose

INVALID = [
    (["data.crop_size=-5"], "data.crop_size"),
    (["data.max_consecutive_rejects=0"], "data.max_consecutive_rejects"),
]


@pytest.mark.parametrize(("overrides", "key"), INVALID)
def test_invalid_value_names_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose(["data.shards=[x]", *overrides]))
    assert err.value.key == key and key in str(err.value)
