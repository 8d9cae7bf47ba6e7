#!/usr/bin/env bash
# The video-editing and in-context table: MetaCanvas and the global baseline on the same held-out clip edits and
# reference scenes x seeds, the VAE's ceiling, and the side-by-side timing. Needs the built-in video-context weights
# (metacanvas_core/assets/tiny/wan_video_context/, metacanvas_video_context / global_video_context.safetensors).
# Writes $OUT/*.json and prints the Markdown table. N=... SEEDS=... to change the benchmark's size.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results}
N=${N:-50}
SEEDS=${SEEDS:-0}
mkdir -p "$OUT"
for task in video-edit in-context; do
  E="$PY -m metacanvas_core evaluate --task $task --n $N --seeds $SEEDS"
  for m in metacanvas global; do
    $E --method "$m" --json "$OUT/${task}_$m.json" > /dev/null
  done
  $E --vae-round-trip --json "$OUT/${task}_vae_round_trip.json" > /dev/null
done
$PY -m metacanvas_core bench --task video-edit --json "$OUT/bench_video_edit.json" > /dev/null
$PY -m metacanvas_core table "$OUT"/video-edit_*.json "$OUT"/in-context_*.json "$OUT/bench_video_edit.json"
