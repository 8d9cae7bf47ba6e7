#!/usr/bin/env bash
# The headline table: every built-in method on the same 200 held-out prompts x 3 seeds, plus canvas-only runs,
# as many prompts of combinations seen in training, the VAE's ceiling and the side-by-side timing.
# Writes results/*.json and prints the Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results}
mkdir -p "$OUT"
E="$PY -m metacanvas_core evaluate --task t2i --n 200 --seeds 0 1 2"
for m in metacanvas global global-posemb; do
  $E --method "$m" --json "$OUT/t2i_$m.json" > /dev/null
  $E --method "$m" --canvas-only --json "$OUT/t2i_${m}_empty_text.json" > /dev/null
  $E --method "$m" --split train --json "$OUT/t2i_${m}_train_split.json" > /dev/null  # memorised vs composed
done
$E --vae-round-trip --json "$OUT/t2i_vae_round_trip.json" > /dev/null  # the ceiling the VAE leaves
$PY -m metacanvas_core bench --json "$OUT/bench_t2i.json" > /dev/null
$PY -m metacanvas_core table "$OUT"/t2i_*.json "$OUT/bench_t2i.json"
