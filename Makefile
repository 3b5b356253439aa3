# Quick start: `make demo` and `make test`; each sets itself up from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FUZZ_STAMP := $(VENV)/.fuzz-installed
FUZZ_SECONDS ?= 30
PROTOS := $(wildcard protos/broker/v1/*.proto)
MATRIX_TESTS := tests/core/test_bounds.py tests/test_loaders.py tests/integration/test_bad_input.py \
	tests/integration/test_authorisation.py tests/integration/test_process_failures.py

.PHONY: setup demo test lint types pytest protos check-protos bench matrices fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/broker demo --suite $(or $(SUITE),classical)

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

# Rewrite the generated tables of docs/reliability.md from real runs (the tests fail when
# the committed tables differ from what they find).
matrices: $(STAMP)
	BROKER_WRITE_MATRICES=1 $(BIN)/pytest -q $(MATRIX_TESTS)

# Coverage-guided fuzzing (atheris, a separate install: a 35 MB wheel): every target for
# FUZZ_SECONDS each; findings are copied to tests/fuzz/regressions/ (make test runs them).
fuzz: $(FUZZ_STAMP)
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev,fuzz]'
	touch $(FUZZ_STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .fuzz
