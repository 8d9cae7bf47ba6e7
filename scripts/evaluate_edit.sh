#!/usr/bin/env bash
# The image-editing table: MetaCanvas and the global baseline on the same held-out edits x seeds, the Kontext VAE's
# ceiling, and the side-by-side timing (plain Kontext vs MetaCanvas). Needs the built-in edit weights
# (metacanvas_core/assets/tiny/flux_edit/, metacanvas_edit.safetensors, global_edit.safetensors).
# Writes $OUT/edit_*.json and prints the Markdown table. N=... SEEDS=... to change the benchmark's size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results}
N=${N:-100}
SEEDS=${SEEDS:-0 1}
mkdir -p "$OUT"
for m in metacanvas global; do
  $PY -m metacanvas_core evaluate --task edit --n "$N" --seeds $SEEDS --method "$m" --json "$OUT/edit_$m.json" > /dev/null
done
$PY -m metacanvas_core bench --task edit --json "$OUT/bench_edit.json" > /dev/null
$PY -m metacanvas_core table "$OUT"/edit_*.json "$OUT/bench_edit.json"
