# `make demo` and `make test` set up (or reuse) the virtual environment in $(VENV) first.
# A torch that is already importable there (the venv sees system site-packages) is kept;
# otherwise $(TORCH_SPEC) is installed before the package, so pip never picks a torch itself.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[test]"
	@touch $@

demo: setup
	$(BIN)/cascade demo

# The tests' models are tiny: one thread is as fast, and immune to other jobs holding a core.
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) demo_out runs *.egg-info
