# The two commands the README gives: `make demo` and `make test`.
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python

.PHONY: setup demo test unit typecheck bench
setup:
	./scripts/setup-host

demo: setup
	$(PY) examples/demo.py

test: setup typecheck
	$(PY) -m pytest -q tests

# mypy.ini: the whole package, strict on domain/ and services/; the fakes are checked against the ports.
typecheck: setup
	$(PY) -m mypy

unit: setup typecheck
	$(PY) -m pytest -q tests/unit

bench: setup
	$(PY) bench/run.py
