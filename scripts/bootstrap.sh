#!/usr/bin/env bash
# Create the project's virtual environment (.venv) with everything the component, its tests and the sample
# job need. Idempotent: does nothing when .venv is already up to date with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# torch and torchvision first, pinned, so that pip takes the builds this machine has instead of resolving anew.
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
STAMP="$VENV/.installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
  exit 0
fi
echo "Setting up $VENV (first run: a few minutes, torch is large)..."
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $TORCH_SPEC
"$VENV/bin/python" -m pip install -q -e ".[dev]"
touch "$STAMP"
echo "$VENV is ready."
