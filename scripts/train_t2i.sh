#!/usr/bin/env bash
# Reproduce every shipped tiny text-to-image weight from seed 0 on 2 CPU cores (about 4 h wall time).
# Resumable: re-run after an interruption and each stage continues from its last saved state in $RUNS.
# Usage: bash scripts/train_t2i.sh   (then: python -m metacanvas_core.training.publish --runs runs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs}
mkdir -p "$R/logs"
export OMP_NUM_THREADS=1  # two trainers side by side, one core each
T="$PY -m metacanvas_core train"

# 1. The planner learns the shapes world (captioning, grounding, counting); the VAE learns to compress it.
[ -f "$R/planner/config.json" ] || $T planner --out "$R/planner" --run-dir "$R/planner_run" --steps 4000 --seed 0 > "$R/logs/planner.log" 2>&1 &
[ -f "$R/vae/config.json" ] || $T vae --out "$R/vae" --run-dir "$R/vae_run" --steps 2000 --seed 0 > "$R/logs/vae.log" 2>&1 &
wait

# 2. The pretrained backbone = global conditioning only (8000 steps, constant LR). Beside it, a global baseline
#    with a positional embedding trained for the whole budget (8000 + 31000 steps).
# Every run that ships ends the same way: the LR falls linearly to zero over its last 4000 steps, and the weights
# written out are an average (EMA 0.999) over that cooldown.
COOL="--cooldown 4000 --ema 0.999"
[ -f "$R/sana_t2i/model_index.json" ] || $T backbone --stage global --planner "$R/planner" --vae "$R/vae" \
  --out "$R/sana_t2i" --out-connector "$R/global_base_t2i.safetensors" --run-dir "$R/global_run" \
  --steps 8000 --seed 0 > "$R/logs/global.log" 2>&1 &
[ -f "$R/sana_t2i_posemb/model_index.json" ] || $T backbone --stage global --pos-embed --planner "$R/planner" --vae "$R/vae" \
  --out "$R/sana_t2i_posemb" --out-connector "$R/global_posemb_t2i.safetensors" --run-dir "$R/posemb_run" \
  --steps 39000 $COOL --seed 0 > "$R/logs/posemb.log" 2>&1 &

while [ ! -f "$R/sana_t2i/model_index.json" ]; do sleep 20; done

# 3. Same extra budget, DiT LR and seed for both: MetaCanvas adds the canvas (its new parts, which start from
#    zero, learn at 4x the LR), the baseline just trains on.
BASE="--planner $R/planner --base $R/sana_t2i --base-connector $R/global_base_t2i.safetensors --steps 31000 $COOL --lr 3e-4 --seed 0"
[ -f "$R/metacanvas_t2i.safetensors" ] || OMP_NUM_THREADS=2 $T backbone --stage metacanvas $BASE --canvas-lr-scale 4 --out "$R/metacanvas_t2i.safetensors" \
  --run-dir "$R/metacanvas_run" > "$R/logs/metacanvas.log" 2>&1 &
[ -f "$R/global_t2i.safetensors" ] || $T backbone --stage global-continue $BASE --out "$R/global_t2i.safetensors" \
  --run-dir "$R/global_continue_run" > "$R/logs/global_continue.log" 2>&1 &
wait
echo "done; publish with: $PY -m metacanvas_core.training.publish --runs $R"
