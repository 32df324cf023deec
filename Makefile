# The two commands of the README: `make demo` and `make test`. Both build .venv from nothing, with
# every pip call constrained by constraints.txt (CPU torch from the pinned wheel, never CUDA).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt
PYTEST_ARGS ?=

.PHONY: install demo test test-all clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) "torch==2.13.0"
	$(PIP) -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nni-rspnet demo --out runs/demo

# `make test` (CI's command) leaves out the `heavy` tests (the wheel in a fresh venv, the quick latency page:
# about 5 of CI's 20 minutes on 2 cores); `make test-all` runs everything.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not heavy" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
