#!/usr/bin/env bash
# The sampler-settings table of the README: MetaCanvas and global conditioning on the benchmark of
# evaluate_t2i.sh (200 held-out prompts x 3 seeds) at other guidance scales, step counts, canvas strengths and with
# the real SANA checkpoint's scheduler.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-results/sampler}
mkdir -p "$OUT"
E="$PY -m metacanvas_core evaluate --task t2i --n 200 --seeds 0 1 2"
# The built-in backbone with the scheduler real SANA checkpoints ship (flow DPM-Solver++ 2M, flow shift 3)
# instead of the built-in flow-matching Euler: same DiT and VAE, only the sampler differs.
DPM="$OUT/sana_t2i_dpm_solver"
$PY - "$DPM" <<'PYEOF'
import shutil, sys
from diffusers import DPMSolverMultistepScheduler
from metacanvas_core.builtin import SANA_T2I

shutil.rmtree(sys.argv[1], ignore_errors=True)
shutil.copytree(SANA_T2I, sys.argv[1])
DPMSolverMultistepScheduler(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, algorithm_type="dpmsolver++",
    solver_order=2, solver_type="midpoint", final_sigmas_type="zero",
).save_pretrained(f"{sys.argv[1]}/scheduler")
PYEOF
for m in metacanvas global; do
  for c in 1.5 3 5 7; do $E --method "$m" --cfg "$c" --json "$OUT/t2i_${m}_cfg$c.json" > /dev/null; done
  $E --method "$m" --steps 50 --json "$OUT/t2i_${m}_steps50.json" > /dev/null
  $E --method "$m" --backbone "$DPM" --json "$OUT/t2i_${m}_dpm_solver.json" > /dev/null
done
for s in 0.5 1.5 2; do $E --method metacanvas --strength "$s" --json "$OUT/t2i_metacanvas_strength$s.json" > /dev/null; done
$PY -m metacanvas_core table "$OUT"/t2i_*.json
