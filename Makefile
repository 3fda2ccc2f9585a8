# Two commands do all the set-up (see README.md):
#   make demo   create .venv/, install glmkit, run the reference analysis on the demo data
#   make test   install the test extra and a headless Chromium, run the whole test suite
# and one opens the analysis notebook:
#   make lab    create .venv/ if needed, open the notebook in JupyterLab (LAB_ARGS: more flags)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_NAME ?= demo
NOTEBOOK := notebooks/second_level_association.ipynb
LAB_ARGS ?=

.PHONY: demo lab test venv test-deps browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -e ".[test]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/glmkit run --params notebooks/reference.yaml --run-name $(RUN_NAME) --force

# the kernel's traffic CurveZMQ-encrypted, as in glmkit run (no "TCP without encryption")
lab: $(VENV)/.installed
	$(BIN)/jupyter lab --KernelManager.transport_encryption=auto $(LAB_ARGS) $(NOTEBOOK)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test-deps: $(VENV)/.installed-test browser

test: test-deps
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info
