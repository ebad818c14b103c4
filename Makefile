# The two commands a fresh clone needs: `make demo` and `make test`. Each installs what it uses.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

AUTOLENS_VENV := .venv-autolens
AUTOLENS_STAMP := $(AUTOLENS_VENV)/.installed
AUTOLENS_PIN := autolens==2026.7.29.1 autofit==2026.7.29.1

.PHONY: test test-autolens demo bench stress lint clean system-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# tests_autolens is checked on its own: its conftest.py would clash with tests/conftest.py as one
# module named conftest in a single mypy run. autolens itself is not in .venv (ignored imports).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/mypy tests_autolens

# Debian packages the suite uses (PostgreSQL server, chromium, bindfs), installed when missing.
system-packages:
	bash scripts/system-packages.sh

test: lint system-packages
	$(BIN)/pytest -m "not stress"

# The trusted bridge (lensd.autofit) and docs/pyautolens.md, run against real PyAutoLens in its
# own venv: autolens never enters .venv, and the default suite never needs it.
$(AUTOLENS_STAMP): pyproject.toml
	test -x $(AUTOLENS_VENV)/bin/python || $(PY) -m venv $(AUTOLENS_VENV)
	$(AUTOLENS_VENV)/bin/python -m pip install -q --upgrade pip
	$(AUTOLENS_VENV)/bin/python -m pip install -q $(AUTOLENS_PIN) -e '.[test,astro]'
	touch $(AUTOLENS_STAMP)

test-autolens: $(AUTOLENS_STAMP)
	PYAUTO_SKIP_WORKSPACE_VERSION_CHECK=1 $(AUTOLENS_VENV)/bin/pytest -p no:cacheprovider tests_autolens

stress: $(STAMP)
	LENSD_STRESS=1 $(BIN)/pytest -m stress

demo: $(STAMP)
	$(BIN)/python -m lensd.demo

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(AUTOLENS_VENV) .mypy_cache .pytest_cache .ruff_cache
