#!/usr/bin/env bash
# fovea-tiny v2's background training on a CPU that other work is using (issue 13): the
# autoencoder until its validation PSNR reaches VAE_PSNR dB or VAE_MIN minutes pass, then
# the UNet + text encoder on cached latents for UNET_MIN minutes. Both stages resume from
# $WORK; on a machine without a checkpoint they start from INIT (a committed folder, when
# its architecture matches). Checkpoints every 8 minutes. Run it again to resume;
# `kill -TERM <pid of train_*.py>` ends a stage early (it saves first).
#
#   nohup bash run_cpu.sh >> ~/.cache/fovea-train-v2/run_cpu.log 2>&1 &
#   VAE_MIN=0 UNET_MIN=600 nohup bash run_cpu.sh >> ... &     # UNet only
#
# NICE (default 5) keeps builds and tests first; THREADS (default 1): on a 2-core machine
# that is also building, one torch thread ran the VAE step 12 img/s where two threads at
# nice 5 ran 0.7-2 (a preempted OpenMP worker stalls the other at every barrier); at
# nice 19 a 2-core machine that is
# building all the time gives the run almost nothing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
WORK=${WORK:-$HOME/.cache/fovea-train-v2}
INIT=${INIT:-}
NICE=${NICE:-5}
THREADS=${THREADS:-1}
VAE_MIN=${VAE_MIN:-120}
VAE_PSNR=${VAE_PSNR:-30}
VAE_LR=${VAE_LR:-8e-4}
VAE_MSE=${VAE_MSE:-2}
UNET_MIN=${UNET_MIN:-600}
UNET_LR=${UNET_LR:-5e-4}
init_vae=() init_unet=()
# INIT: models/training/wip (an autoencoder snapshot, snapshot.py; v2's last one is in git
# history only: git checkout b804122 -- models/training/wip) or a shipped v2 folder.
if [ -n "$INIT" ]; then
  init_vae=(--init-from "$INIT")
  if [ -e "$INIT/unet/config.json" ]; then init_unet=(--init-from "$INIT")
  # No UNet there and no autoencoder trained here (VAE_MIN=0): freeze INIT's.
  elif [ ! -e "$WORK/vae/diffusers/config.json" ]; then init_unet=(--vae "$INIT/vae"); fi
fi
mkdir -p "$WORK"
if [ "$VAE_MIN" != 0 ] && [ ! -e "$WORK/unet/vae/config.json" ]; then
  nice -n "$NICE" "$PY" train_vae.py --work "$WORK" --minutes "$VAE_MIN" --save-minutes 8 \
    --batch 16 --crop 64 --lr "$VAE_LR" --warmup 200 --threads "$THREADS" --log-every 20 \
    --mse-weight "$VAE_MSE" --target-psnr "$VAE_PSNR" --run-name vae_v2 "${init_vae[@]}"
fi
if [ "$UNET_MIN" != 0 ]; then
  nice -n "$NICE" "$PY" train_unet.py --work "$WORK" --minutes "$UNET_MIN" --save-minutes 8 \
    --sample-minutes 40 --batch 32 --lr "$UNET_LR" --warmup 200 --ema 0.999 --threads "$THREADS" \
    --log-every 10 --run-name unet_v2 "${init_unet[@]}"
fi
