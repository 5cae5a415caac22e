# Fresh-machine entry points. Everything is installed into ./.venv from PyPI, except torch: constraints.txt pins
# its CPU build, which pip finds in a local wheel folder or PyTorch's CPU index (see the README's Quick start).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: setup setup-test demo test bench

$(VENV)/.core: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) -e ".[test]"
	touch $@

setup: $(VENV)/.core
setup-test: $(VENV)/.test

# The main job: train a small AST on the embedded Speech Commands demo set, evaluate it, keep the model.
demo: setup
	$(VENV)/bin/ast-jax train --config configs/demo.py --workdir runs/demo

test: setup-test
	$(PY) -m pytest -q

bench: setup-test
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done
