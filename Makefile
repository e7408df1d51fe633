# Two entry points a newcomer needs (see README): `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PYTEST_ARGS ?=

$(BIN)/mcpvs: setup.cfg pyproject.toml requirements/constraints.txt
	$(PYTHON) -m venv $(VENV)
	# CPU torch first, pinned by the constraints, so nothing pulls a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[test]'
	touch $@

install: $(BIN)/mcpvs

demo: install
	$(BIN)/mcpvs demo /tmp/mcpvs-demo

test: install
	$(BIN)/ruff check mcpvs_bidsapp tests benchmarks
	NIPYPE_NO_ET=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# the niivue bundle of the report's viewer, rebuilt from npm (tools/niivue, versions pinned there)
niivue:
	tools/niivue/build.sh

.PHONY: install demo test niivue
