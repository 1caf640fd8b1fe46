# One-command entry points. Only python3 (>= 3.11) and make are assumed: every target
# that needs the environment builds it first, in $(VENV) (default .venv).
#
#   make test    ruff + mypy --strict + pytest      make demo    the sandbox demo
#   make lint    ruff + mypy only                   make bench   every bench/*.py
#   make lab     JupyterLab on notebooks/, with the sandbox on
#
# Overrides: make test VENV=/tmp/v PYTHON=python3.12 PYTEST_ARGS="-x -k sandbox"

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

# The first python3 on PATH that is at least 3.11 (pyproject's requires-python).
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)
VENV ?= .venv
BIN := $(VENV)/bin
# Re-install when the dependencies change; the stamp lives inside the venv it describes.
STAMP := $(VENV)/.atlas-nb-installed
EXTRAS ?= dev,notebook,sandbox
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup test lint demo lab bench clean oracles

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "make: need python3 >= 3.11 on PATH (or PYTHON=...)" >&2; exit 1; }
	@$(BIN)/python -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv $(VENV) || { \
		echo "make: could not create $(VENV); on Debian/Ubuntu: apt-get install python3-venv" >&2; \
		exit 1; }
	@echo "make: installing atlas_nb[$(EXTRAS)] into $(VENV) (first run takes a minute)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

setup: $(STAMP)  ## build the environment only

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy atlas_nb

# The official clients (vast-cli's `vastai`, runpod-python's `runpod`) as oracles for the
# sandbox's wire formats: one virtualenv each, since their pins conflict with ours and with
# each other; the tests drive them and never install anything themselves.
ORACLES := vastai runpod
ORACLE_STAMPS := $(foreach o,$(ORACLES),.oracles/$(o)/.installed)
.oracles/%/.installed: oracles/%.txt
	@test -n "$(PYTHON)" || { echo "make: need python3 >= 3.11 on PATH (or PYTHON=...)" >&2; exit 1; }
	@echo "make: building the $* oracle in .oracles/$*"
	@rm -rf .oracles/$* && $(PYTHON) -m venv .oracles/$*
	.oracles/$*/bin/python -m pip install -q --no-deps -r $<
	@touch $@

oracles: $(ORACLE_STAMPS)  ## the official clients' virtualenvs

# pytest exit status 5 (nothing collected) fails the target like any other failure.
test: lint oracles
	$(BIN)/pytest $(PYTEST_ARGS)

# Executes notebooks/01_quickstart.ipynb against the sandbox; the executed copy goes to build/.
demo: $(STAMP)
	$(BIN)/python -m atlas_nb.demo

# One sandbox process for the whole session (every kernel inherits ATLAS_NB_SANDBOX, so
# `%atlas sandbox on` attaches at once); it stops when JupyterLab does.
LAB_ARGS ?=
lab: $(STAMP)
	@$(BIN)/python -c 'import jupyterlab' 2>/dev/null || $(BIN)/python -m pip install -q -e ".[lab]"
	@log=$$(mktemp); $(BIN)/atlas-nb sandbox >"$$log" 2>&1 & pid=$$!; \
	trap 'kill $$pid 2>/dev/null; rm -f "$$log"' EXIT; url=; \
	for _ in $$(seq 300); do \
		url=$$(sed -n 's/^atlas_nb sandbox listening on //p' "$$log"); [[ -n $$url ]] && break; \
		kill -0 $$pid 2>/dev/null || { cat "$$log" >&2; exit 1; }; sleep 0.1; \
	done; \
	[[ -n $$url ]] || { echo "make: the sandbox did not start" >&2; exit 1; }; \
	echo "make: sandbox at $$url; JupyterLab on notebooks/ (Ctrl-C twice stops both)"; \
	root=$$([[ $$(id -u) == 0 ]] && echo --allow-root || true); \
	ATLAS_NB_SANDBOX=$$url $(BIN)/jupyter lab --ServerApp.root_dir=notebooks $$root $(LAB_ARGS)

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"   # the official runpod SDK, a baseline
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python "$$b"; echo; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
