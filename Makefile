# Set-up and entry points. `make bench` runs the suite (GPU if present, else the tiny model on CPU);
# `make test` runs fluxperf's own tests. Both create .venv on first use, with the locked versions.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=
# The versions `make venv`, `make test` and `make bench` install: requirements/lock.txt (scripts/lock.sh writes it; README, "Quick start"), so
# a fresh clone installs what the last reviewed lock-update tested, whatever PyPI published since.
# `make test LOCK=` takes the newest versions pyproject.toml allows instead.
LOCK ?= requirements/lock.txt
PIP_LOCK = $(if $(LOCK),-c $(LOCK))
# pip doesn't apply -c to the isolated environment that builds fluxperf itself (setuptools): this does (pip 25.3+,
# which the first install below puts in place).
PIP_BUILD_LOCK = $(if $(LOCK),--build-constraint $(LOCK))
# pruna's own dependency list is huge and pins torchao<0.17; the two pruna variants need only pyproject.toml's
# pruna-deps extra (it says why), so pruna itself goes in without its declared dependencies. The lock pins it too.
PRUNA := pruna==0.3.4
# One stamp per lock, so switching between `LOCK=` and the lock installs again.
STAMP := $(VENV)/.installed-$(if $(LOCK),$(subst /,-,$(LOCK)),newest)

.PHONY: venv pruna bench lint test wheelhouse install-offline clean

# One resolve: the project, its extras and pruna's few requirements in one pip invocation, so no later install can
# downgrade what it chose; then pruna alone. check-env fails, naming the package pair, if pip check or an import of
# transformers, diffusers, pruna, torchao or modelopt fails, or (with a lock) .venv holds a version the lock lacks.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed-*
	$(BIN)/pip install -q $(PIP_LOCK) --upgrade pip
	$(BIN)/pip install -q $(PIP_LOCK) $(PIP_BUILD_LOCK) $(if $(LOCK),,--upgrade --upgrade-strategy eager) -e '.[test,fp8,pruna-deps]'
	$(BIN)/pip install -q $(PIP_LOCK) --no-deps '$(PRUNA)'
	$(BIN)/python -m fluxperf check-env $(if $(LOCK),--lock $(LOCK))
	touch $@

venv: $(STAMP)

# Kept for the install hints that name it: `make venv` installs pruna now.
pruna: venv

# The main job: every variant on the built-in default, table in the terminal, files in reports/.
# With a GPU: the real model (README, "Running on a GPU"). Without one: an offline smoke run of the tiny model
# on CPU, which checks the harness, not FLUX: 64x64, 12 steps (TaylorSeer caches only after step 10), 4 prompts,
# 3 to 6 rounds (the report's header states the scenario), and LPIPS on a random backbone (labelled in the
# report) because torchvision's AlexNet weights may not be downloadable. About 1.5 minutes on 2 cores.
CPU_SMOKE := --fluxperf-device=cpu --fluxperf-height=64 --fluxperf-width=64 --fluxperf-steps=12 \
             --fluxperf-num-prompts=4 --fluxperf-rounds=3 --fluxperf-max-rounds=6 --fluxperf-lpips-random-backbone
bench: venv
	@if $(BIN)/python -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		echo "+ pytest -m gpu $(ARGS)"; $(BIN)/pytest -m gpu $(ARGS); \
	else \
		echo "no CUDA device: offline smoke run of the tiny model on CPU"; \
		echo "+ pytest -m gpu $(CPU_SMOKE) $(ARGS)"; $(BIN)/pytest -m gpu $(CPU_SMOKE) $(ARGS); \
	fi

# ruff's lint and format check (configured in pyproject.toml), before the tests.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when a selection matches no tests (e.g. ARGS="-k nothing"): not a failure. Two pytest-xdist
# workers: on a 2-core machine the suite took 207-211 s instead of 289 s in one process.
test: venv lint
	$(BIN)/pytest -m "not gpu" -n 2 $(ARGS) || [ $$? -eq 5 ]

# Offline install for GPU hosts without internet that already have torch: wheels of every non-torch
# dependency, for the target's Python version and platform.
WHEEL_PYTHON   ?= 3.12
WHEEL_PLATFORM ?= manylinux_2_28_x86_64
WHEELHOUSE     ?= wheelhouse
wheelhouse:
	$(PYTHON) scripts/wheelhouse.py --python-version $(WHEEL_PYTHON) --platform $(WHEEL_PLATFORM) --dest $(WHEELHOUSE)

# On the GPU host, with its own torch: installs fluxperf and its dependencies from the folder alone.
install-offline:
	$(PYTHON) -m pip install --no-index --find-links $(WHEELHOUSE) --no-build-isolation -e .

clean:
	rm -rf $(VENV) reports .pytest_cache
