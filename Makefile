# `make demo` and `make test` work on a fresh Linux machine with python3 (3.10+).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.9.0

.PHONY: demo test lint clean preflight

$(BIN)/referee: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" "$(TRITON_SPEC)" numpy
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

demo: $(BIN)/referee
	$(BIN)/referee demo examples

# Two pytest-xdist workers: a plain run keeps about half of two cores busy (its tests mostly wait on
# processes they started: harness processes, Redis, workers, containers). One unit of work per
# test file, so module fixtures (Redis stacks, warm pools) start once, in collection order.
PYTEST_WORKERS ?= 2

# The suite installs what it lacks with apt-get and starts dockerd itself, which needs root. As another
# user, everything must be there already: say what is missing instead of failing halfway. The list of
# tools and how they are set up live in tests/machine.py.
preflight: $(BIN)/referee
	@$(BIN)/python -m tests.machine

test: $(BIN)/referee preflight
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.installed_layout mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20 tests

lint: $(BIN)/referee
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m tests.installed_layout mypy
	$(BIN)/python -m tests.installed_layout lint-imports

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache
