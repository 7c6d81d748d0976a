# Two commands for a new user: `make demo` (set up + the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test clean

# Where pip finds torch's CPU build; PyPI's Linux x86-64 wheel is the multi-GB CUDA one, so on a machine whose
# pip reads PyPI give `make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu` (empty: pip's own indexes).
TORCH_INDEX ?=

# Python 3.10+ is checked first, and the environment made afresh (--clear) until an install has finished, so an
# interrupted or failed setup (another Python, say) never leaves a broken .venv behind.
# torch is installed first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
# tensorrt-stubs is installed without its dependencies (they live on NVIDIA's own index).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "fad-edge needs Python 3.10 or newer; " + sys.executable + " is " + sys.version.split()[0] + ": give make PYTHON=python3.11, say")'
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
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
