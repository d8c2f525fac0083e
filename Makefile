# tailpipe: every target installs what it needs first, so a fresh clone needs only `make`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STACK := $(PY) deploy/local/stack.py
PYTEST_ARGS ?=

.PHONY: help venv stack-up stack-down stack-status migrate check run test bench bench-api bench-alerts bench-otlp bench-stream chaos lint fmt clean

help:
	@echo "make run          bring up the local stack, migrate, check, run the pipeline"
	@echo "make test         lint, bring up the local stack, run the whole test suite"
	@echo "make bench        ingest benchmark vs a plain dump and Quix (BENCH_ARGS='--messages 200000')"
	@echo "make bench-api    query API latency over 5M log rows (loads them once, into bench_api)"
	@echo "make bench-otlp   the collector's OTLP logs and traces throughput (BENCH_OTLP_ARGS='--requests 100')"
	@echo "make bench-stream streaming tail events against the same invocations as trace items"
	@echo "make chaos        random faults (kill -9, PostgreSQL and S3 down) then an accounting"
	@echo "make stack-up | stack-down | stack-status"
	@echo "make lint | fmt | clean"

# The modules mypyc compiles (pyproject.toml's hook) are built into the editable install: it
# is made again when pyproject.toml or one of them changes, so no stale build is ever run.
COMPILED := $(shell $(PYTHON) -c 'import tomllib; h = tomllib.load(open("pyproject.toml", "rb"))["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]; print(" ".join(h["include"]))')
COMPILED_SOURCES := $(wildcard $(COMPILED))
# The native core (Rust, pipeline/native) is built by the same install (deploy/packaging/native_hook.py).
NATIVE_SOURCES := $(wildcard pipeline/native/src/*.rs) pipeline/native/Cargo.toml pipeline/native/Cargo.lock deploy/packaging/native_hook.py

# The virtualenv is rebuilt when pyproject.toml, a compiled module or the native core changes.
$(VENV)/.installed: pyproject.toml $(COMPILED_SOURCES) $(NATIVE_SOURCES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

stack-up: venv
	$(STACK) up

stack-down:
	@if [ -x $(PY) ]; then $(STACK) down; else echo "no virtualenv: nothing was started"; fi

stack-status: venv
	$(STACK) status

migrate: stack-up
	$(VENV)/bin/tailpipe migrate

check: stack-up
	$(VENV)/bin/tailpipe check

run: stack-up
	$(VENV)/bin/tailpipe migrate
	$(VENV)/bin/tailpipe topics create
	$(VENV)/bin/tailpipe check
	$(PY) deploy/local/demo.py --count 50000 --replicas 2

# Ingest benchmark (not a test): one topic pre-filled with 1,000,000 events, read in turn by
# `tailpipe run`, a plain COPY dump (with and without the trigram index), Quix Streams with its
# PostgreSQL sink (installed once into .local/bench/quix-venv) and a bare Kafka read, settling
# before each; events/s, consumer and PostgreSQL CPU per event, peak RSS, the targets met or
# not. Table printed, JSON in .local/bench/. E.g. BENCH_ARGS='--messages 300000 --replicas 1,2'.
BENCH_ARGS ?=
bench: stack-up
	$(PY) bench/ingest.py $(BENCH_ARGS)

# Query API benchmark (not a test): p50/p95 of every endpoint at 24 h and 720 h over 5M+ log
# rows loaded through the pipeline into the kept schema bench_api. JSON in .local/bench/.
BENCH_API_ARGS ?=
bench-api: stack-up
	$(PY) bench/api.py $(BENCH_API_ARGS)

# Alert latency (not a test): from an event to its alert on the alerts topic, vs one flush.
bench-alerts: stack-up
	$(PY) bench/alerts.py

# OTLP receiver throughput (not a test): one real `tailpipe collect` on a fresh topic, posted
# Cloudflare-shaped logs and traces (50 invocations or traces per request; JSON, gzip'd JSON,
# protobuf) by 8 and 32 concurrent clients; requests/s, records/s, latency, the collector's CPU
# per 1,000 records and peak RSS, the topic's messages against the acknowledged ones. JSON in
# .local/bench/. E.g. BENCH_OTLP_ARGS='--only logs --encodings json --concurrency 8'.
BENCH_OTLP_ARGS ?=
bench-otlp: stack-up
	$(PY) bench/otlp.py $(BENCH_OTLP_ARGS)

# Streamed invocations (streaming Tail Workers) against the same ones as classic trace items:
# one replica each, one run; the ratio of invocations/s (BENCH_STREAM_ARGS='--order classic,stream').
bench-stream: stack-up
	$(PY) bench/stream.py $(BENCH_STREAM_ARGS)

# The failure scenarios at random for CHAOS_ARGS (default 120 s of faults), then an accounting:
# produced = stored + dead-lettered, nothing twice. JSON in .local/chaos/.
CHAOS_ARGS ?=
chaos: stack-up
	$(PY) -m tests.chaos $(CHAOS_ARGS)

lint: venv
	$(VENV)/bin/ruff check pipeline tests deploy/local bench
	$(VENV)/bin/ruff format --check pipeline tests deploy/local bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

fmt: venv
	$(VENV)/bin/ruff check --fix pipeline tests deploy/local bench
	$(VENV)/bin/ruff format pipeline tests deploy/local bench

# Under CI the stack is stopped afterwards whatever the result, so no server outlives the run.
test: lint
	@status=0; { $(STACK) tools && $(STACK) up && $(PY) -m pytest $(PYTEST_ARGS); } || status=$$?; \
	if [ -n "$$CI" ]; then $(STACK) down; fi; \
	exit $$status

clean: stack-down
	rm -rf .local $(VENV)
