#!/usr/bin/env bash
# The environment users run is the one we check: build a virtual environment from conda.yaml's exact pip pins
# (what Azure ML installs into the component's image), then run the components through their own YAML command
# lines in it: sample data (its validation half also as an MLTable), Init Image Model (resnet18, untrained),
# Train PyTorch Model (2 epochs), Score Image Model, then the MLflow model (PyTorch and pyfunc) against
# model.onnx under onnxruntime. The test suite runs in .venv, with newer versions; this catches what the pinned
# versions break.
#
#   bash scripts/check_environment.sh [--require-onnx]      (or: make check-environment)
#
# Environment: AZURE_VENV (default .venv-azure), PYTHON (default python3; must match conda.yaml's python=X.Y),
# REUSE_VENV=1 to keep a venv built from the same pins, KEEP_WORKDIR=1 to keep the run's folder,
# REQUIRE_ONNX=1 as --require-onnx (a missing model.onnx fails instead of warning).
# The pinned torch is the CUDA 12 build from PyPI: several GB to download, 8 GB on disk.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${AZURE_VENV:-.venv-azure}
PYTHON=${PYTHON:-python3}
REQUIRE_ONNX=${REQUIRE_ONNX:-0}
case "${1:-}" in
  "") ;;
  --require-onnx) REQUIRE_ONNX=1 ;;
  *) echo "usage: $0 [--require-onnx]" >&2; exit 2 ;;
esac

fail() { echo "check_environment: FAILED: $*" >&2; exit 1; }

WORK=$(mktemp -d -t check-environment.XXXXXX)
if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "Work folder (kept): $WORK"; else trap 'rm -rf "$WORK"' EXIT; fi

# 1. The pins, read with PyYAML rather than grep so that the YAML means what it means to conda. The local
# python reads them when it has PyYAML; otherwise a throwaway venv with PyYAML does.
READER=$PYTHON
if ! "$PYTHON" -c 'import yaml' 2>/dev/null; then
  "$PYTHON" -m venv "$WORK/reader" && "$WORK/reader/bin/pip" install -q pyyaml && READER="$WORK/reader/bin/python"
fi
WANTED=$("$READER" scripts/check_environment.py pins conda.yaml "$WORK/requirements.txt") || fail "cannot read conda.yaml's pins"
HAVE=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Wheels (torch, numpy, onnxruntime ...) are per Python version: another one would check other builds.
[ "$HAVE" = "$WANTED" ] || fail "conda.yaml wants python $WANTED, $PYTHON is $HAVE; set PYTHON=python$WANTED"

# 2. The venv: a fresh one, so that nothing left from an earlier build hides a conflict. REUSE_VENV=1 keeps
# one whose stamp says it was built from these very pins.
started=$SECONDS
if [ "${REUSE_VENV:-0}" = 1 ] && cmp -s "$WORK/requirements.txt" "$VENV/.check-environment-pins"; then
  echo "Reusing $VENV (built from the same pins)."
else
  echo "Building $VENV from conda.yaml's pins (python $HAVE)..."
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # conda.yaml's pip is unpinned (conda takes a current one); azureml-dataprep needs pip >= 25.3.
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$WORK/requirements.txt" || fail "pip cannot install conda.yaml's pins together"
  # The project itself without its dependencies: pyproject's looser ranges must not pull other versions.
  "$VENV/bin/python" -m pip install -q --no-deps -e . || fail "pip cannot install the project"
  cp "$WORK/requirements.txt" "$VENV/.check-environment-pins"
fi
build_seconds=$((SECONDS - started))
# pip check also tests the pins against pyproject.toml's ranges (the project is installed).
"$VENV/bin/python" -m pip check || fail "the installed packages' requirements conflict (pip check above)"
echo "Installed:"
"$VENV/bin/python" scripts/check_environment.py versions

# 3. The components, as a pipeline would run them.
started=$SECONDS
flag=""
[ "$REQUIRE_ONNX" = 1 ] && flag=--require-onnx
# shellcheck disable=SC2086
"$VENV/bin/python" scripts/check_environment.py run "$WORK" $flag || exit 1
echo "check_environment: OK (venv ${build_seconds}s, run $((SECONDS - started))s)"
