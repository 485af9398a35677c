# The two quick-start commands: `make sample` (set up, then train on the built-in sample) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup sample test lint clean check-environment

setup:
	VENV=$(VENV) bash scripts/bootstrap.sh

sample: setup
	$(PY) -m train_pytorch_model.local.sample_job

test: setup
	$(PY) -m ruff check src tests pipelines benchmarks scripts
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests pipelines benchmarks scripts
	$(PY) -m ruff format --check src tests pipelines benchmarks scripts

# conda.yaml's exact pins in .venv-azure (several GB of CUDA wheels), then the components run in it; see
# scripts/check_environment.sh. REQUIRE_ONNX=1 makes a missing model.onnx a failure.
check-environment:
	bash scripts/check_environment.sh

clean:
	rm -rf runs .pytest_cache
