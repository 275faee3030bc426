# Two commands for a newcomer: `make demo` (the main job) and `make test` (the tests).
# Each sets up .venv first. torch is pinned so this machine's local CPU build is used
# instead of a multi-GB CUDA download; on other machines pip fetches the usual wheel.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
OUT ?= outputs/vtfusion-synthshapes

.PHONY: setup test compat lint format demo bench study data-study app

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(VENV)/bin/pytest -n 2 --dist loadfile -q

# The checkpoint code under the oldest supported and the newest transformers (part of `make test`; this runs it alone).
compat: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/pytest -q tests/test_transformers_versions.py

demo: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m training.main_job --output_dir $(OUT)

# The demo page on a saved checkpoint (default: the main job's), at http://127.0.0.1:$(PORT).
MODEL ?= $(OUT)
PORT ?= 7860
app: setup
	MODEL=$(MODEL) PORT=$(PORT) $(PY) app/app.py

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.run

study: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m training.fusion_study $(STUDY_ARGS)

# Class imbalance, low-data and noisy-pair remedies over 3 seeds (the noisy-pair filter is the base `make demo` leaves).
data-study: setup
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m training.data_study $(STUDY_ARGS)
