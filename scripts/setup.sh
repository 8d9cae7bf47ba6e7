#!/usr/bin/env bash
# Install the pack and its test tools into .venv (or into the active virtual environment).
# torch: kept if already installed (ComfyUI users have their own); otherwise TORCH_SPEC, by default the CPU
# build torch==2.13.0, so CPU machines never pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PY=python
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
fi
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
$PY -m pip install -q -e ".[dev${EXTRAS:+,$EXTRAS}]"
