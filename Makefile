# The two quick-start commands: `make sample` (set up, then train on the built-in sample) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup sample test lint clean

setup:
	VENV=$(VENV) bash scripts/bootstrap.sh

sample: setup
	$(PY) -m train_pytorch_model.local.sample_job

test: setup
	$(PY) -m ruff check src tests pipelines benchmarks
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests pipelines benchmarks
	$(PY) -m ruff format --check src tests pipelines benchmarks

clean:
	rm -rf runs .pytest_cache
