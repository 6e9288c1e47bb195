# Two commands do all set-up on a fresh machine with Python 3.11+ and make:
#   make run   — starts the local stack and sends one request through it with live progress
#   make test  — lint, type-check and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean local

$(STAMP): pyproject.toml plugins/echo/pyproject.toml plugins/textstats/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e plugins/echo -e plugins/textstats
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/streamer demo

local: $(STAMP)
	$(BIN)/streamer local

lint: $(STAMP)
	$(BIN)/ruff check platform tests plugins benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# make bench: the quick mode (under 2 minutes); make bench BENCH=--full: the issue's sizes (long).
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
