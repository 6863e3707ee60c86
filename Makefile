# convlens: two commands.  `make demo` and `make test` set everything up first.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_DIR ?= demo

# Torch's OpenMP threads spin while waiting; on a busy 2-core box that costs up to 20x.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo lint test test-fast browser bench lab docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# Reinstall only when the dependency list changes (idempotent).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

setup: $(STAMP)

demo: setup
	$(BIN)/convlens demo --out $(DEMO_DIR)
	@echo "open $(abspath $(DEMO_DIR))/index.html"

# Debian's Chromium for the browser tests (never `playwright install`).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: browser tests will be skipped (install Debian's chromium)"; fi; }

# ruff with the settings in pyproject.toml; examples/ too once it exists (ruff fails on a missing path).
lint: setup
	$(BIN)/ruff check $(wildcard convlens tests bench examples)

test: setup browser
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not browser"

# JupyterLab on this venv (its kernel is the venv's Python), opened on the lesson notebooks; the
# notebooks find the course's data in ../shared/data themselves.
lab: setup
	$(BIN)/python -m pip install -q -e '.[lab]'
	$(BIN)/python -m jupyter lab --notebook-dir=docs/notebooks

bench: setup
	for f in bench/*_bench.py; do $(BIN)/python $$f || exit 1; done

# The API reference from the docstrings (mkdocs.yml), into build/docs; a warning fails the build.
docs: setup
	$(BIN)/mkdocs build --strict --clean -f mkdocs.yml -d build/docs
	@echo "open $(abspath build/docs)/index.html"

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info
