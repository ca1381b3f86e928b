# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CATALOG ?=
N_PRODUCTS ?= 1000
PYTEST_ARGS ?=
BENCH_ARGS ?=
FAULTS_ARGS ?=

.PHONY: install demo test lint bench bench-http bench-scale bench-verify faults clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[tf,broker,dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/lookalike demo $(if $(CATALOG),--catalog $(CATALOG),--n-products $(N_PRODUCTS))

# Starts its own Tansu broker unless LOOKALIKE_TEST_BOOTSTRAP points at one; runs the real-server
# Milvus suite too when LOOKALIKE_TEST_MILVUS_SERVER_URI is set (.ci/run does both).
test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/bench_pipeline.py
	$(PY) bench/bench_http.py

# POST /v1/search by vector and by image, HTTP next to in-process, and 4 concurrent clients.
bench-http: install
	$(PY) bench/bench_http.py

# Fills Milvus Lite and a Milvus server of its own (MILVUS_VENV or .venv-milvus) through the
# ingest write path, 10k and 100k rows: docs/benchmarks.md. `make bench-scale BENCH_ARGS=--json`
bench-scale: install
	$(PY) bench/scale.py $(BENCH_ARGS)

# compare_prices per query, stage by stage (CPU and wall), on a same-item protocol that
# bench/protocols_same_item.py wrote: docs/matching.md, "Speed round".
bench-verify: install
	$(PY) bench/verify_cost.py $(BENCH_ARGS)

# Kills, outages, poison, SSRF and slow images against the real CLI; one line per scenario,
# non-zero exit when a goal fails: docs/benchmarks.md. `make faults FAULTS_ARGS="--only poison"`
faults: install
	$(PY) bench/faults.py $(FAULTS_ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
