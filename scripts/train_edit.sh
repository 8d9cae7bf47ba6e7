#!/usr/bin/env bash
# Reproduce the image-editing weights (FLUX.1-Kontext architecture, tiny) from seed 0 on 2 CPU cores, on the
# accelerate trainer: the Kontext VAE, then the global base (the tiny world's "pretrained Kontext"), then MetaCanvas
# and the global baseline trained on with the same extra budget, data and seed, side by side.
# Budgets (optimizer steps, from the environment): VAE_STEPS (default 500), GLOBAL_STEPS (8000), EXTRA_STEPS (4000 per
# stage-2 run); batch 32, one thread per run. The shipped files' own budgets are in their metadata (training_recipe)
# and in docs/training.md.
# Resumable: re-run after an interruption and each run continues from its last saved state (--resume) in $RUNS;
# logs in $RUNS/logs/edit_*.log and every run's $RUNS/<run>/log.jsonl.
# The planner is the shipped built-in one (one planner serves every task; it is not trained further here).
# Usage: bash scripts/train_edit.sh   (PUBLISH=1 also copies the results into metacanvas_core/assets/tiny/; FROM=builtin
# starts from the published base instead of from scratch: its VAE, its DiT and text connector pretrained further).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs}
mkdir -p "$R/logs"
export OMP_NUM_THREADS=1
T="$PY -m metacanvas_core train"
PLANNER=metacanvas_core/assets/tiny/planner
VAE_STEPS=${VAE_STEPS:-500}
GLOBAL_STEPS=${GLOBAL_STEPS:-8000}
EXTRA_STEPS=${EXTRA_STEPS:-4000}  # stage 2, each of the two runs
# Every DiT run draws from one fixed pool of edits whose VAE latents and planner states are computed once and kept
# in $R/edit_cache (the stage-2 runs find them there).
POOL="--pool 20000 --cache-dir $R/edit_cache"
# Each run ends the same way: the LR falls linearly to zero over its last third, and the weights written out are an
# average over that cooldown (horizon about a quarter of it).
cool() { local c=$(($1 / 3)); echo "--cooldown $c --ema $(awk "BEGIN {print 1 - 4 / $c}") --save-every 100"; }

A=metacanvas_core/assets/tiny
if [ "${FROM:-}" = builtin ]; then  # carry the published base on: its VAE as is, its DiT pretrained further below
  [ -f "$R/edit_vae_run/vae/config.json" ] || { mkdir -p "$R/edit_vae_run" && cp -r "$A/flux_edit/vae" "$R/edit_vae_run/vae"; }
  GLOBAL_INIT="--base $A/flux_edit --base-connector $A/global_base_edit.safetensors"
else
  GLOBAL_INIT="--vae $R/edit_vae_run/vae"
fi

# 1. The Kontext VAE (AutoencoderKL, 16 channels) learns edit-world images; its shift and scale are measured after.
[ -f "$R/edit_vae_run/vae/config.json" ] || $T vae-kontext --out "$R/edit_vae_run" --steps "$VAE_STEPS" $(cool "$VAE_STEPS") --seed 0 --resume \
  > "$R/logs/edit_vae.log" 2>&1

# 2. The pretrained Kontext backbone = global conditioning only (the planner's text states, having seen the source);
#    a tenth of its samples are identity edits ("move the red circle to top left" where it already is), so it learns
#    to copy the reference, as any Kontext must.
[ -f "$R/edit_global_run/backbone/model_index.json" ] || $T edit --stage global --planner "$PLANNER" \
  $GLOBAL_INIT --out "$R/edit_global_run" --steps "$GLOBAL_STEPS" $(cool "$GLOBAL_STEPS") --seed 0 --resume \
  --identity-share 0.1 $POOL > "$R/logs/edit_global.log" 2>&1

# 3. Same extra budget, LR and seed for both: MetaCanvas adds the canvas (its new parts learn at 4x the LR), the
#    baseline just trains on.
G="$R/edit_global_run"
BASE="--planner $PLANNER --base $G/backbone --base-connector $G/global_base_edit.safetensors"
BASE="$BASE --steps $EXTRA_STEPS $(cool "$EXTRA_STEPS") --lr 3e-4 --seed 0 --resume $POOL"
[ -f "$R/edit_metacanvas_run/metacanvas_edit.safetensors" ] || $T edit --stage metacanvas $BASE \
  --canvas-lr-scale 4 --out "$R/edit_metacanvas_run" > "$R/logs/edit_metacanvas.log" 2>&1 &
[ -f "$R/edit_global_continue_run/global_edit.safetensors" ] || $T edit --stage global-continue $BASE \
  --out "$R/edit_global_continue_run" > "$R/logs/edit_global_continue.log" 2>&1 &
wait

if [ "${PUBLISH:-0}" = 1 ]; then
  $PY -m metacanvas_core.training.publish --edit-runs "$R"  # float16 copies into metacanvas_core/assets/tiny/
else
  echo "done; PUBLISH=1 bash scripts/train_edit.sh (or publish --edit-runs $R) copies them into the package"
fi
