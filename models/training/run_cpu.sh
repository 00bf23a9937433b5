#!/usr/bin/env bash
# Background training on a CPU that other work is using: the autoencoder for VAE_MIN more
# minutes, then the UNet + text encoder for UNET_MIN minutes, both at nice 19 on 2 threads,
# both resuming from $WORK. Run it again to resume. `kill -TERM <pid of train_vae.py>`
# ends the autoencoder stage early (it saves first) and the UNet stage starts.
#
#   nohup bash run_cpu.sh > ~/.cache/fovea-train/run_cpu.log 2>&1 &
#   VAE_MIN=0 UNET_MIN=600 nohup bash run_cpu.sh > ... &     # UNet only
set -euo pipefail
cd "$(dirname "$0")"
PY=${PY:-python3}
WORK=${WORK:-$HOME/.cache/fovea-train}
VAE_MIN=${VAE_MIN:-120}
VAE_LR=${VAE_LR:-3e-4}
UNET_MIN=${UNET_MIN:-1440}
if [ "$VAE_MIN" != 0 ]; then
  nice -n 19 "$PY" train_vae.py --work "$WORK" --minutes "$VAE_MIN" --save-minutes 10 \
    --batch 16 --crop 64 --lr "$VAE_LR" --threads 2 --log-every 20
fi
if [ "$UNET_MIN" != 0 ]; then
  nice -n 19 "$PY" train_unet.py --work "$WORK" --minutes "$UNET_MIN" --save-minutes 15 \
    --sample-minutes 60 --batch 16 --warmup 100 --ema 0.995 --threads 2 --log-every 10
fi
