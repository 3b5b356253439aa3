# Quick start: `make demo` and `make test`; each sets itself up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/broker/v1/*.proto)

.PHONY: setup demo test lint types pytest protos check-protos bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/broker demo

test: $(STAMP) check-protos lint types pytest

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q

# Regenerate Python code from protos/ (committed; check-protos fails when stale).
protos: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH ./scripts/gen-protos.sh .

check-protos: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH ./scripts/gen-protos.sh --check

bench: $(STAMP)
	$(BIN)/broker bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
