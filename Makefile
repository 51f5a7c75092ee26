# Crivline Edge. Two commands on a fresh machine: `make up` and `make test`.
# Each one prepares its own virtual environment from pyproject.toml.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check
# Two stamps: `make up` needs only the runtime dependencies (a quick first start);
# `make test` and the other developer targets add the dev extras (pytest, mypy, locust…).
RUNTIME := $(VENV)/.installed-runtime
STAMP   := $(VENV)/.installed

.PHONY: up test lint typecheck unit bench bench-deps bench-micro bench-fleet venv clean

$(RUNTIME): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(PIP) -e .
	@touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	@$(PIP) -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

# ARGS are passed to `crivline up`, for example ARGS="--data-dir /srv/crivline".
up: $(RUNTIME)
	@$(BIN)/crivline up $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The packages, then the load tests (scripts that import each other: checked as files).
typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy loadtests/*.py

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

# The load benchmark: a stack on embedded servers, throughput against a same-run baseline,
# streams and propagation, the locust scenarios; report in loadtests/results/<time>/.
# Bounded (~7 min). BENCH_ARGS=--smoke for the few-seconds version make test runs.
bench: bench-deps
	$(BIN)/python loadtests/bench.py $(BENCH_ARGS)

# What the bench uses beyond pyproject.toml: matplotlib for the plots, and wrk (when it
# can be installed) for the throughput phase; without wrk it uses its Python generator.
bench-deps: $(STAMP)
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check matplotlib
	@command -v wrk >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get install -y -qq wrk >/dev/null || true; fi; \
		command -v wrk >/dev/null || echo "note: wrk is not installed; the bench uses its Python generator"; }

# The fleet simulation: a primary, its pg_basebackup standby, a relay, a bus and 20 bus-only
# edges (syncd + Valkey; proxies on 3) under steady writes; report in
# loadtests/results/fleet-<time>/. Bounded (~3 min). FLEET_ARGS=--smoke: 3 edges, seconds.
bench-fleet: $(STAMP)
	$(BIN)/python loadtests/fleet.py $(FLEET_ARGS)

bench-micro: $(STAMP)
	$(BIN)/pytest tests/benchmarks -m benchmark --benchmark-enable --benchmark-columns=min,median,mean,ops -p no:randomly

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache

# The browser tests' tools (tests/browser): Debian's Chromium, and the npm packages pinned
# in tests/browser/js/package-lock.json. `make test` installs the npm packages itself when
# Node and npm are there; without Chromium or Node those tests skip (in CI, they fail).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: browser-deps
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	fi
	@command -v npm >/dev/null || { echo "install Node.js 20+ with npm first"; exit 1; }
	cd tests/browser/js && npm ci --no-audit --no-fund && \
	  cat package.json package-lock.json | sha256sum | cut -d' ' -f1 \
	  > node_modules/.crivline-lock-sha256
