# The two commands of the README: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.podisco-installed
OUT ?= runs/losses
BETA ?= 0.05
GENERATIONS ?= 2
POPULATION ?= 4
TRANSFER_SEEDS ?= 2

.PHONY: run losses test lint format clean

# The stamp depends on pyproject.toml: a changed dependency list or extra re-installs on the next make.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: a bare `torch` would pull a multi-GB CUDA build; a torch you bring is kept.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The default discovery run: evolve (no LLM needed) on the built-in IMDb task, a small budget.
run: $(STAMP)
	$(VENV)/bin/podisco discover --generations $(GENERATIONS) --population $(POPULATION) --transfer-seeds $(TRANSFER_SEEDS)

losses: $(STAMP)
	$(VENV)/bin/podisco losses analyze --beta $(BETA) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .import_linter_cache
