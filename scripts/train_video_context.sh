#!/usr/bin/env bash
# Reproduce the shipped tiny video editing + in-context video weights (one set serves both tasks) from seed 0 on 2 CPU
# cores, on the accelerate trainer, on top of the text-to-video backbone as the paper trains them: two runs side by
# side with the same extra budget, data and seed, both from scripts/train_video.sh's global run (its Wan folder,
# widened for context at the start, and its text connector): MetaCanvas with a fresh 3-keyframe canvas, and
# global-continue (no canvas).
# Resumable: re-run after an interruption and each run continues from its last saved state (--resume) in $RUNS.
# Usage: BASE_RUNS=runs-video RUNS=runs-video-context bash scripts/train_video_context.sh
#   (then: python -m metacanvas_core.training.publish --video-context-runs runs-video-context).
# FROM=builtin starts from the published text-to-video base (wan_t2v/ + global_base_t2v.safetensors) instead of
# $BASE_RUNS, as the shipped video-context weights were made.
# Budgets come from the environment: EXTRA_STEPS (optimizer steps, each run), BATCH, THREADS (per run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs-video-context}
BASE_RUNS=${BASE_RUNS:-runs-video}
EXTRA_STEPS=${EXTRA_STEPS:-3600}
BATCH=${BATCH:-8}
THREADS=${THREADS:-1}
A=metacanvas_core/assets/tiny
PLANNER=${PLANNER:-$A/planner}
if [ "${FROM:-}" = builtin ]; then
  BASE_DIR=$A/wan_t2v BASE_CONNECTOR=$A/global_base_t2v.safetensors
else
  BASE_DIR=$BASE_RUNS/global_run/backbone BASE_CONNECTOR=$BASE_RUNS/global_run/global_base_t2v.safetensors
fi
for f in "$BASE_DIR/model_index.json" "$BASE_CONNECTOR"; do
  [ -f "$f" ] || { echo "missing $f: run scripts/train_video.sh first (or set BASE_RUNS, or FROM=builtin)" >&2; exit 2; }
done
mkdir -p "$R/logs"
T="$PY -m metacanvas_core train video-context"
# As train_video.sh: the LR falls linearly to zero over the last third, the exported weights average that cooldown.
cool() { local c=$(($1 / 3)); echo "--cooldown $c --ema $(awk "BEGIN {print 1 - 4 / $c}")"; }
export OMP_NUM_THREADS=$THREADS
BASE="--planner $PLANNER --base $BASE_DIR --base-connector $BASE_CONNECTOR --in-context-share 0.5"
BASE="$BASE --steps $EXTRA_STEPS --batch $BATCH --warmup 20 $(cool "$EXTRA_STEPS") --lr 3e-4 --save-every 50"
# Both runs draw from the same fixed pools of clip edits and reference scenes, whose conditioning and target latents
# are computed once and kept in $R/cache (about 70 kB per example).
BASE="$BASE --pool 10000 --cache-dir $R/cache"
BASE="$BASE --seed 0 --resume"
[ -f "$R/metacanvas_run/metacanvas_video_context.safetensors" ] || $T --stage metacanvas --keyframes 3 $BASE \
  --canvas-lr-scale 4 --out "$R/metacanvas_run" > "$R/logs/metacanvas.log" 2>&1 &
[ -f "$R/global_continue_run/global_video_context.safetensors" ] || $T --stage global-continue $BASE \
  --out "$R/global_continue_run" > "$R/logs/global_continue.log" 2>&1 &
wait
echo "done; publish with: $PY -m metacanvas_core.training.publish --video-context-runs $R"
