# The two quick-start commands: `make sample` (set up, then train on the built-in sample) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup sample test lint clean

setup:
	VENV=$(VENV) bash scripts/bootstrap.sh

sample: setup
	$(PY) -m train_pytorch_model.sample_job

test: setup
	$(PY) -m ruff check src tests
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests
	$(PY) -m ruff format --check src tests

clean:
	rm -rf runs .pytest_cache
