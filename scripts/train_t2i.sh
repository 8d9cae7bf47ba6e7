#!/usr/bin/env bash
# Reproduce every shipped tiny text-to-image weight from seed 0 on 2 CPU cores (about 4 h wall time), on the
# accelerate trainer (one process each; the same commands run under `accelerate launch`).
# Resumable: re-run after an interruption and each run continues from its last saved state (--resume) in $RUNS.
# Usage: bash scripts/train_t2i.sh   (then: python -m metacanvas_core.training.publish --runs runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs}
mkdir -p "$R/logs"
export OMP_NUM_THREADS=1  # two trainers side by side, one core each
T="$PY -m metacanvas_core train"

# 1. The planner learns the shapes world (captioning, grounding, counting); the VAE learns to compress it.
[ -f "$R/planner_run/planner/config.json" ] || $T planner --out "$R/planner_run" --steps 4000 --seed 0 --resume \
  > "$R/logs/planner.log" 2>&1 &
[ -f "$R/vae_run/vae/config.json" ] || $T vae --out "$R/vae_run" --steps 2000 --seed 0 --resume \
  > "$R/logs/vae.log" 2>&1 &
wait
PLANNER="$R/planner_run/planner"

# 2. The pretrained backbone = global conditioning only (8000 steps, constant LR). Beside it, a global baseline
#    with a positional embedding trained for the whole budget (8000 + 31000 steps).
# Every run that ships ends the same way: the LR falls linearly to zero over its last 4000 steps, and the weights
# written out are an average (EMA 0.999) over that cooldown.
COOL="--cooldown 4000 --ema 0.999"
[ -f "$R/global_run/backbone/model_index.json" ] || $T t2i --stage global --planner "$PLANNER" \
  --vae "$R/vae_run/vae" --out "$R/global_run" --steps 8000 --seed 0 --resume > "$R/logs/global.log" 2>&1 &
[ -f "$R/posemb_run/backbone/model_index.json" ] || $T t2i --stage global --pos-embed --planner "$PLANNER" \
  --vae "$R/vae_run/vae" --out "$R/posemb_run" --export-name global_posemb_t2i --steps 39000 $COOL --seed 0 \
  --resume > "$R/logs/posemb.log" 2>&1 &

while [ ! -f "$R/global_run/backbone/model_index.json" ]; do sleep 20; done

# 3. Same extra budget, DiT LR and seed for both: MetaCanvas adds the canvas (its new parts, which start from
#    zero, learn at 4x the LR), the baseline just trains on.
BASE="--planner $PLANNER --base $R/global_run/backbone --base-connector $R/global_run/global_base_t2i.safetensors"
BASE="$BASE --steps 31000 $COOL --lr 3e-4 --seed 0 --resume"
[ -f "$R/metacanvas_run/metacanvas_t2i.safetensors" ] || OMP_NUM_THREADS=2 $T t2i --stage metacanvas $BASE \
  --canvas-lr-scale 4 --out "$R/metacanvas_run" > "$R/logs/metacanvas.log" 2>&1 &
[ -f "$R/global_continue_run/global_t2i.safetensors" ] || $T t2i --stage global-continue $BASE \
  --out "$R/global_continue_run" > "$R/logs/global_continue.log" 2>&1 &
wait
echo "done; publish with: $PY -m metacanvas_core.training.publish --runs $R"
