# Two commands: `make demo` and `make test`. Both create .venv when missing and (re)install
# the project into it whenever a source, contract, template or fixture changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CSDL := node_modules/odata-csdl/schemas/edm.xsd
SOURCES := pyproject.toml $(shell find p2c_etl contracts reports data/fixtures/demo -type f \
	-not -name '*.pyc' -not -path '*/__pycache__/*' 2>/dev/null)

.PHONY: demo test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "p2c-etl needs Python 3.11 or newer: set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/python -m pip install --quiet '.[dev]'
	@touch $(STAMP)

# The OASIS CSDL XML schemas the sandbox's $metadata is validated against (tests/sandbox/
# test_metadata_schema.py): shipped by the OData committee's npm package, used, not copied.
$(CSDL):
	npm install --no-save --no-audit --no-fund --silent odata-csdl@0.11.2

demo: $(STAMP)
	$(BIN)/p2c demo

test: $(STAMP) $(CSDL)
	$(BIN)/pytest
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python bench/diff_bench.py
	$(BIN)/python bench/http_bench.py
	$(BIN)/python bench/migrate_bench.py
	$(BIN)/python bench/nightly_bench.py --accounts 100000 --growth-accounts 10000

clean:
	rm -rf $(VENV) node_modules p2c-demo build dist .pytest_cache .mypy_cache .ruff_cache
