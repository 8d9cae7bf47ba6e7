#!/usr/bin/env bash
# The video table: every built-in video method on the same held-out clips x seeds (text-to-video, canvas alone,
# image-to-video), the VAE's ceiling, and the side-by-side timing (plain Wan vs MetaCanvas, 3 vs 1 keyframes).
# Needs the built-in video weights (metacanvas_core/assets/tiny/wan_t2v/ and *_t2v*.safetensors).
# Writes results/*.json and prints the Markdown table. N=... SEEDS=... to change the benchmark's size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results}
N=${N:-100}
SEEDS=${SEEDS:-0 1}
mkdir -p "$OUT"
for task in t2v i2v; do
  E="$PY -m metacanvas_core evaluate --task $task --n $N --seeds $SEEDS"
  for m in metacanvas metacanvas-k1 global; do
    $E --method "$m" --json "$OUT/${task}_$m.json" > /dev/null
  done
  $E --vae-round-trip --json "$OUT/${task}_vae_round_trip.json" > /dev/null  # the ceiling the VAE leaves
done
for m in metacanvas global; do  # canvas alone: empty text to the DiT
  $PY -m metacanvas_core evaluate --task t2v --n "$N" --seeds $SEEDS --method "$m" --canvas-only \
    --json "$OUT/t2v_${m}_empty_text.json" > /dev/null
done
$PY -m metacanvas_core bench --task t2v --json "$OUT/bench_t2v.json" > /dev/null
$PY -m metacanvas_core table "$OUT"/t2v_*.json "$OUT"/i2v_*.json "$OUT/bench_t2v.json"
