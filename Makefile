# Leadflow: `make run` starts everything, `make test` checks everything.
# Both create the virtual environment and install on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: help install run test lint typecheck unit integration e2e asyncapi bench clean

help:
	@echo "make run    - venv, install, Kafka and PostgreSQL, migrate, start the stack (Ctrl-C stops it)"
	@echo "make test   - the same set-up, then ruff, mypy and the whole pytest suite"
	@echo "make bench  - benchmarks on a stack of their own (BENCH_QUICK=1: under 3 minutes)"
	@echo "make clean  - remove the venv and the local data dir ./var"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

run: install
	$(BIN)/leadflow kafka fetch
	$(BIN)/leadflow up

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: install lint typecheck
	$(BIN)/leadflow kafka fetch
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure"; fi; \
	  exit $$rc

unit: install
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

e2e: install
	$(BIN)/pytest tests/e2e $(PYTEST_ARGS)

bench: install
	bash deploy/bench/install-tools.sh
	$(BIN)/leadflow kafka fetch
	$(BIN)/python -m bench

asyncapi: install
	$(BIN)/leadflow asyncapi --output docs/asyncapi.json

clean:
	rm -rf $(VENV) var
