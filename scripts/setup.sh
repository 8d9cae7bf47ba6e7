#!/usr/bin/env bash
# Install the pack and its test tools into .venv, the environment the README's commands run with.
# Without a .venv, an active virtual environment becomes it (.venv links to it); otherwise a new one is made.
# torch: kept if already installed (ComfyUI users have their own); otherwise TORCH_SPEC, by default the CPU
# build torch==2.13.0, so CPU machines never pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e .venv ]; then
  if [ -n "${VIRTUAL_ENV:-}" ]; then ln -s "$VIRTUAL_ENV" .venv; else python3 -m venv .venv; fi
fi
PY=.venv/bin/python
if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
$PY -m pip install -q -e ".[dev${EXTRAS:+,$EXTRAS}]"
