# The two commands the README gives: `make demo` and `make test`.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit bench
setup:
	./scripts/setup-host

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -q tests

unit: setup
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) bench/run.py
