# fedlearn: `make run` runs a local federation, `make test` runs every check.
# Both create .venv and install everything first (apt packages too, where apt exists).

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := .apt-installed
APT_PACKAGES := dataset-fashion-mnist haproxy

# `make cluster`: coordinator replicas behind HAProxy on the local PostgreSQL and Redis.
CLUSTER_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
CLUSTER_REDIS_URL ?= redis://127.0.0.1:6379/0
CLUSTER_ARGS ?=

RUN_ARGS ?= --clients 10 --partitioner shards --model cnn --out fedlearn-run

.PHONY: run test lint typecheck layers unit bench clean proto install cluster

install: $(STAMP) $(APT_STAMP)

$(VENV)/bin/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's Fashion-MNIST (60k/10k IDX files) and HAProxy (the load balancer of
# `make cluster`); installed once, skipped quietly where apt is missing.
$(APT_STAMP): Makefile
	@if [ -d /usr/share/datasets/fashion-mnist ] && command -v haproxy >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq $(APT_PACKAGES) >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq $(APT_PACKAGES) >/dev/null)) || \
		echo "warning: could not install $(APT_PACKAGES); Fashion-MNIST and HAProxy tests will be skipped"; \
	else echo "note: apt-get not available; install $(APT_PACKAGES) for Fashion-MNIST and the cluster"; fi
	@touch $(APT_STAMP)

run: install
	$(BIN)/fedlearn run $(RUN_ARGS)

cluster: install
	$(BIN)/fedlearn db upgrade --database-url '$(CLUSTER_DATABASE_URL)'
	$(BIN)/fedlearn cluster --database-url '$(CLUSTER_DATABASE_URL)' --redis-url '$(CLUSTER_REDIS_URL)' $(CLUSTER_ARGS)

lint: install
	$(BIN)/ruff check src tests scripts benchmarks
	$(BIN)/ruff format --check src tests scripts benchmarks

typecheck: install
	$(BIN)/mypy

layers: install
	$(BIN)/lint-imports

test: install lint typecheck layers
	$(BIN)/python -m pytest -q

# Benchmarks (quick mode by default; BENCH_ARGS="--full" for the long runs).
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

proto: install
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) $(APT_STAMP) fedlearn-run fedlearn-cluster .pytest_cache .mypy_cache .ruff_cache
