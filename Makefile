# Every target installs into .venv first (idempotent: reinstalls only when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast eval toyworld toytasks lint bench bench-full ablation clean

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

toytasks: install
	$(PY) -m flash_exp.toyworld.tasks $(ARGS)

bench: install
	$(PY) -m flash_exp.bench $(ARGS)

# The full-size backbones on one GPU (about 10 minutes on an H100): docs/benchmarks.md's full-size section
bench-full: install
	PY=$(PY) bash bench/full_size_gpu.sh $(ARGS)

# The toy-world ablation grid of Fig. 5 (c-h), one sweep after the other on this machine, each job
# trained then evaluated, then the leaderboard. ABLATION_ARGS shortens every job (60 steps, a tenth of
# the default run's); set ABLATION_ARGS= for the full toy schedule. SEEDS=3 trains every point of the
# grid with training seeds 0, 1, 2 (a sweep axis: distinct job directories), which the leaderboard
# groups into a mean and a 95 % interval per configuration and pairs against the paper's choice.
SEEDS ?= 1
SEED_ARGS := $(if $(filter-out 1,$(SEEDS)),seed=$(shell seq -s, 0 $$(( $(SEEDS) - 1 ))))
ABLATIONS ?= fig5c_guidance_toy fig5d_losses fig5e_timesteps fig5f_distill_loss_toy fig5g_gan_loss fig5h_k
ABLATION_ARGS ?= phases.iterations=[10,15,15,20] trainer.checkpoint_every=30 trainer.sample_every=60
ablation: install
	for name in $(ABLATIONS); do \
	  $(PY) -m flash_exp.train -m experiment=$$name $(ABLATION_ARGS) $(SEED_ARGS) $(ARGS) || exit 1; \
	done
	$(PY) -m flash_exp.leaderboard

lint: install
	$(VENV)/bin/ruff check flash_exp tests

clean:
	rm -rf $(VENV) .pytest_cache
