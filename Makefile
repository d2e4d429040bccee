# Every target installs into .venv first (idempotent: reinstalls only when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast eval toyworld lint bench ablation clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(VENV)/bin/uv pip install --python $(PY) -q -e '.[dev]'
	touch $(STAMP)

train: install
	$(PY) -m flash_exp.train $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

test-fast: install
	$(PY) -m pytest -q -m "not slow and not slurm" $(ARGS)

eval: install
	$(PY) -m flash_exp.evaluate runs_dir=$${FLASH_EXP_RUNS:-runs} $(ARGS)
	$(PY) -m flash_exp.leaderboard

toyworld: install
	$(PY) -m flash_exp.toyworld $(ARGS)

bench: install
	$(PY) -m flash_exp.bench $(ARGS)

lint: install
	$(VENV)/bin/ruff check flash_exp tests

clean:
	rm -rf $(VENV) .pytest_cache
