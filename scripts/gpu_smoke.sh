#!/usr/bin/env bash
# Smoke test of training at real layouts: on one GPU, replicas of the released checkpoints' layouts (Qwen2.5-VL-7B
# planner, SANA 1600M, FLUX.1-Kontext-dev, Wan2.2-TI2V-5B: real widths, vocabulary and VAEs, the transformers cut
# to 1-2 blocks) train every task a few steps in bf16 with a DiT LoRA (video-context: its widened DiT in full) and
# gradient checkpointing, sample once through --validation-prompt at the end of each run, then sample all six
# generation tasks with `generate` from the exported weights. Prints the exit code, wall time, median step time,
# last loss and peak memory of each (metacanvas_core/training/smoke.py does the work, in one process).
#   bash scripts/gpu_smoke.sh                  one CUDA GPU (the default)
#   DEVICE=cpu bash scripts/gpu_smoke.sh       on the CPU, every size tiny as well (tests/test_gpu_smoke.py runs it)
# Environment: DEVICE (cuda|cpu), OUT (work folder; default a new temp folder), STEPS (default 3), PYTHON.
# The replicas are untrained: this checks that training and sampling go through and what they cost, not what they
# make. Needs ../shared/reference-configs beside the clone (the real configs), accelerate, peft and av.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DEVICE=${DEVICE:-cuda}
case "$DEVICE" in
  cuda) ;;
  cpu) export CUDA_VISIBLE_DEVICES="" ;;  # the trainer (accelerate) and generate then run on the CPU
  *) echo "DEVICE must be cuda or cpu, not $DEVICE" >&2; exit 2 ;;
esac
OUT=${OUT:-$(mktemp -d -t metacanvas-smoke-XXXXXX)}
exec "$PY" -m metacanvas_core.training.smoke run --out "$OUT" --device "$DEVICE" --steps "${STEPS:-3}"
