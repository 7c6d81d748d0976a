# Two commands for a new user: `make demo` (set up + the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
# tensorrt-stubs is installed without its dependencies (they live on NVIDIA's own index).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[train,dev,face]"
	$(BIN)/pip install --quiet --no-deps tensorrt-stubs==10.13.0.35.1
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fad-edge demo --out demo_out

# Lint and type-check first (ruff and mypy come with the dev extra), then the tests.
test: $(STAMP)
	$(BIN)/ruff check fad_edge tests examples bench
	$(BIN)/mypy
	$(BIN)/pytest

clean:
	rm -rf $(VENV) demo_out
