#!/usr/bin/env bash
# Reproduce the shipped tiny video weights (Wan 2.2 TI2V layout, clip world) from seed 0 on 2 CPU cores, on the
# accelerate trainer: the Wan VAE, the global base (text- and image-to-video), then three runs side by side with the
# same extra budget, data and seed: MetaCanvas with 3 keyframes, with 1 keyframe (ablation), and global-continue.
# Resumable: re-run after an interruption and each run continues from its last saved state (--resume) in $RUNS.
# Usage: RUNS=runs-video bash scripts/train_video.sh   (then: python -m metacanvas_core.training.publish --video-runs
# runs-video). Budgets (optimizer steps) can be overridden from the environment. FROM=builtin starts from the published
# base instead of from scratch (its VAE, its DiT and text connector pretrained further): a budget spread over runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
R=${RUNS:-runs-video}
VAE_STEPS=${VAE_STEPS:-5000}
GLOBAL_STEPS=${GLOBAL_STEPS:-2000}
EXTRA_STEPS=${EXTRA_STEPS:-4500}  # stage 2, each of the three runs
BATCH=${BATCH:-8}
VAE_BATCH=${VAE_BATCH:-8}
THREADS=${THREADS:-1}  # per stage-2 run (three run side by side)
SOLO_THREADS=${SOLO_THREADS:-2}  # steps 1 and 2 run alone
DIT_HEADS=${DIT_HEADS:-2}  # the fresh DiT's width in heads of 64 (the shipped one: 2)
STAGE2_LR=${STAGE2_LR:-1e-3}
PLANNER=${PLANNER:-metacanvas_core/assets/tiny/planner}
mkdir -p "$R/logs"
T="$PY -m metacanvas_core train"
# Each run ends the same way: the LR falls linearly to zero over its last third, and the weights written out are an
# average over that cooldown (horizon about a quarter of it).
cool() { local c=$(($1 / 3)); echo "--cooldown $c --ema $(awk "BEGIN {print 1 - 4 / $c}")"; }

# 1. The Wan VAE learns to compress clips: 48 latent channels as Wan 2.2's (16 kept too little: colours drifted),
#    on 9-frame windows (two chunks after the first frame, so the chunk cache is trained) of 16x16 crops; then it is
#    fine-tuned on whole 17-frame windows, so the last two latent frames are trained too (on 9-frame windows they
#    were the encoder's extrapolation: their scale grew frame by frame, and shape constancy was 58 -> 93 after).
#    Its latent statistics are measured on full clips.
export OMP_NUM_THREADS=$SOLO_THREADS
A=metacanvas_core/assets/tiny
VAE_FT_STEPS=${VAE_FT_STEPS:-1500}
if [ "${FROM:-}" = builtin ]; then  # carry the published base on: its VAE as is, its DiT pretrained further below
  [ -f "$R/vae_ft_run/vae/config.json" ] || { mkdir -p "$R/vae_ft_run" && cp -r "$A/wan_t2v/vae" "$R/vae_ft_run/vae"; }
  GLOBAL_INIT="--base $A/wan_t2v --base-connector $A/global_base_t2v.safetensors"
else
  # The published clip VAE is what step 1 (both of its runs) makes from seed 0: start from it where it ships (on
  # its own before the video DiTs trained on it are published, then in their Wan folder).
  SHIPPED_VAE=$A/wan_vae; [ -d "$SHIPPED_VAE" ] || SHIPPED_VAE=$A/wan_t2v/vae
  [ -f "$R/vae_ft_run/vae/config.json" ] || [ ! -f "$SHIPPED_VAE/config.json" ] || {
    mkdir -p "$R/vae_ft_run" && cp -r "$SHIPPED_VAE" "$R/vae_ft_run/vae"; }
  GLOBAL_INIT="--vae $R/vae_ft_run/vae --dit-heads $DIT_HEADS"
fi
[ -f "$R/vae_ft_run/vae/config.json" ] || [ -f "$R/vae_run/vae/config.json" ] || $T vae-wan --out "$R/vae_run" \
  --steps "$VAE_STEPS" --batch "$VAE_BATCH" --latent-channels 48 --frames 9 --crop 16 --lr 1e-3 --warmup 30 \
  $(cool "$VAE_STEPS") --save-every 100 --seed 0 --resume > "$R/logs/vae.log" 2>&1
[ -f "$R/vae_ft_run/vae/config.json" ] || $T vae-wan --init "$R/vae_run/vae" --out "$R/vae_ft_run" \
  --steps "$VAE_FT_STEPS" --batch "$VAE_BATCH" --frames 17 --crop 16 --lr 3e-4 --warmup 30 $(cool "$VAE_FT_STEPS") \
  --save-every 100 --seed 0 --resume > "$R/logs/vae_ft.log" 2>&1

# Every DiT run draws from the same fixed pools of clips and images, whose VAE latents are computed once and kept in
# $R/cache (the stage-2 runs find them there); half the samples are still images (one latent frame, as Wan 2.2
# trains on images and clips jointly), half of the clips start from their given first frame (image-to-video).
DATA="--image-share 0.5 --i2v-share 0.5 --pool 20000 --cache-dir $R/cache"

# 2. The pretrained backbone: a fresh tiny Wan DiT with global conditioning only, text- and image-to-video (FROM=builtin:
#    the published base, pretrained GLOBAL_STEPS further).
[ -f "$R/global_run/backbone/model_index.json" ] || $T video --stage global --planner "$PLANNER" \
  $GLOBAL_INIT --out "$R/global_run" --steps "$GLOBAL_STEPS" --batch "$BATCH" --lr 1e-3 --warmup 50 \
  $DATA $(cool "$GLOBAL_STEPS") --save-every 100 --seed 0 --resume > "$R/logs/global.log" 2>&1

# 3. Same extra budget, DiT LR and seed for all three: MetaCanvas adds the canvas (its new parts, which start from
#    zero, learn at 4x the LR), with 3 keyframes and with 1; the baseline just trains on.
export OMP_NUM_THREADS=$THREADS
BASE="--planner $PLANNER --base $R/global_run/backbone --base-connector $R/global_run/global_base_t2v.safetensors"
BASE="$BASE --steps $EXTRA_STEPS --batch $BATCH --warmup 20 $(cool "$EXTRA_STEPS") --lr $STAGE2_LR --save-every 50 $DATA"
BASE="$BASE --seed 0 --resume"
[ -f "$R/metacanvas_run/metacanvas_t2v.safetensors" ] || $T video --stage metacanvas --keyframes 3 $BASE \
  --canvas-lr-scale 4 --out "$R/metacanvas_run" > "$R/logs/metacanvas.log" 2>&1 &
[ -f "$R/metacanvas_k1_run/metacanvas_t2v_k1.safetensors" ] || $T video --stage metacanvas --keyframes 1 $BASE \
  --canvas-lr-scale 4 --export-name metacanvas_t2v_k1 --out "$R/metacanvas_k1_run" > "$R/logs/metacanvas_k1.log" 2>&1 &
[ -f "$R/global_continue_run/global_t2v.safetensors" ] || $T video --stage global-continue $BASE \
  --out "$R/global_continue_run" > "$R/logs/global_continue.log" 2>&1 &
wait
echo "done; publish with: $PY -m metacanvas_core.training.publish --video-runs $R"
