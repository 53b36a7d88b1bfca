# CoinPilot: `make run` (the whole pipeline, embedded) and `make test` (everything, real servers).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test install services lint proto proto-check bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev,embedded]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/coinpilot demo

services:
	bash scripts/ensure-services.sh

test: $(STAMP) services
	$(VENV)/bin/ruff check .
	$(PY) -m coinpilot.proto --check
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache --no-logo

proto: $(STAMP)
	$(PY) -m coinpilot.proto --write

proto-check: $(STAMP)
	$(PY) -m coinpilot.proto --check

bench: $(STAMP) services
	for f in bench/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
