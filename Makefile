# The two commands a user needs: `make run` and `make test`. Everything else is
# installed by them into .venv (Python) and the user cache (Kafka jars).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The benchmark's Quix Streams peer: a virtualenv of its own (bench/requirements-peers.txt).
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed
PYTEST_ARGS ?=
# Tests run on three processes (pytest-xdist): most of them wait on Kafka or on a flow
# they started, so two left a third of a small machine's two cores idle; three were
# 8-10% faster. (With three, a flow once hung after its broker restarted: its input
# consumer never reconnected. The input now opens such a consumer anew.) The longest
# tests are listed at the end.
TEST_WORKERS ?= 3
RUN_ARGS ?=
# Typed cores compiled with mypyc (scripts/compile), each built next to its source, all
# rebuilt when one changes (or a build is gone). Modules with msgspec Structs stay plain.
COMPILED := operators/next_step.py operators/customer_step.py operators/decide.py \
	operators/journeys.py operators/segments.py operators/conditions.py \
	operators/identity.py operators/replay.py operators/sealing.py \
	operators/intent.py
EXT_SUFFIX := $(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
COMPILED_BUILDS := $(COMPILED:.py=$(EXT_SUFFIX))

.PHONY: install compile run test bench soak lint format dashboards kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# PYTHONWARNINGS: setuptools warns that an editable install's folders shadow the
	@# package names, which is exactly the layout we want.
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

$(COMPILED_BUILDS) &: $(COMPILED) scripts/compile $(STAMP)
	$(PY) scripts/compile $(COMPILED)

## Compile the typed cores (COMPILED) with mypyc; run, test and bench do it when needed.
compile: $(COMPILED_BUILDS)

## Run the main job on the embedded default (built-in simulator, no broker).
run: $(STAMP) $(COMPILED_BUILDS)
	$(VENV)/bin/wayfinder run --overwrite $(RUN_ARGS)

# A command after it runs against a local Kafka, started first and stopped when it ends
# (unless KAFKA_BOOTSTRAP_SERVERS is set: then that cluster, and nothing started).
WITH_KAFKA = trap 'scripts/kafka down' EXIT; scripts/kafka up && \
	KAFKA_BOOTSTRAP_SERVERS="$${KAFKA_BOOTSTRAP_SERVERS:-127.0.0.1:$${WAYFINDER_KAFKA_PORT:-9092}}"

## Start a local Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set), run every test, stop Kafka.
test: $(STAMP) $(COMPILED_BUILDS)
	@$(WITH_KAFKA) $(PY) -m pytest -n $(TEST_WORKERS) --dist worksteal --durations=12 $(PYTEST_ARGS)

$(PEERS_STAMP): bench/requirements-peers.txt
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -r bench/requirements-peers.txt
	@touch $(PEERS_STAMP)

## Benchmark (figures, not assertions): the cores, the flow in-process and through a local
## Kafka (started and stopped here unless KAFKA_BOOTSTRAP_SERVERS is set), bytewax's floor,
## Quix Streams and a naive consumer on the same workload; writes bench/results.json.
bench: $(STAMP) $(COMPILED_BUILDS) $(PEERS_STAMP)
	@$(WITH_KAFKA) $(PY) scripts/bench $(BENCH_ARGS)

## Soak (not part of `make test`): tests run again and again beside busy cores, each
## failing run's folder kept (scripts/soak; SOAK_ARGS="--runs 20 --busy 1 [TEST ...]").
soak: $(STAMP) $(COMPILED_BUILDS)
	@$(WITH_KAFKA) $(PY) scripts/soak $(SOAK_ARGS)

## Style, types and the architecture's import rules (pyproject.toml: ruff, mypy, import-linter).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

## Grafana dashboards (dashboards/*.json) from their code, dashboards/build.py.
dashboards: $(STAMP)
	$(PY) dashboards/build.py

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

kafka-up:
	scripts/kafka up

kafka-down:
	scripts/kafka down

clean:
	test ! -x $(PY) || $(PY) scripts/compile --clean
	rm -rf $(VENV) $(PEERS) out .pytest_cache .ruff_cache
