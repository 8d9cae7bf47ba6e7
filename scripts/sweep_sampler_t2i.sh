#!/usr/bin/env bash
# The sampler-settings table of docs/experiments.md: MetaCanvas and global conditioning on the benchmark of
# evaluate_t2i.sh (200 held-out prompts x 3 seeds) at other guidance scales, step counts, samplers and canvas
# strengths.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/sampler}
mkdir -p "$OUT"
E="$PY -m metacanvas_core evaluate --task t2i --n 200 --seeds 0 1 2"
for m in metacanvas global; do
  for c in 1.5 3 5 7; do $E --method "$m" --cfg "$c" --json "$OUT/t2i_${m}_cfg$c.json" > /dev/null; done
  $E --method "$m" --steps 50 --json "$OUT/t2i_${m}_steps50.json" > /dev/null
  # Flow Euler without shift (the built-in folder's scheduler until it took released SANA's DPM-Solver++ 2M, shift 3).
  $E --method "$m" --sampler euler --shift 1 --json "$OUT/t2i_${m}_euler.json" > /dev/null
done
for s in 0.5 1.5 2; do $E --method metacanvas --strength "$s" --json "$OUT/t2i_metacanvas_strength$s.json" > /dev/null; done
$PY -m metacanvas_core table "$OUT"/t2i_*.json
