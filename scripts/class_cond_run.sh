#!/usr/bin/env bash
# The class-conditional measurement of bench/RESULTS.md: train the small preset on Fashion-MNIST
# with its labels (label dropout 0.1) for a fixed time, then sample every class in turn (DDIM) at
# several classifier-free guidance scales and report how often the FD-FMNIST classifier sees the
# class asked for (chance: 10%), beside FD-FMNIST / IS-FMNIST. Guidance 0 is the unconditional
# model (the null class), the control. Results land in RUN/eval/fd_*-classall-g*.json.
#
# usage: scripts/class_cond_run.sh RUN [TRAIN_SECONDS] [SAMPLES] [DDIM_STEPS] [GUIDANCE_SCALES...]
# DIFFUSE_THREADS sets --threads of the training (0: LibTorch's default).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DIFFUSE_BIN:-$here/build/diffuse}"
run="${1:?usage: scripts/class_cond_run.sh RUN [TRAIN_SECONDS] [SAMPLES] [DDIM_STEPS] [SCALES...]}"
seconds="${2:-600}"
n="${3:-1000}"
steps="${4:-50}"
shift $(($# < 4 ? $# : 4))
scales="${*:-0 1 3}"

if [ ! -d "$run/checkpoints" ]; then
  "$bin" train --data fashion-mnist --model fmnist-small --class-cond --label-dropout 0.1 \
    --out "$run" --steps 100000 --batch 32 --lr 1e-3 --warmup 200 --ema-decay 0.995 \
    --time-limit "$seconds" --sample-every 0 --ckpt-every 500 --log-every 25 \
    --threads "${DIFFUSE_THREADS:-0}"
fi
for s in $scales; do
  "$bin" eval fd --model "$run" --sampler ddim --steps "$steps" --n "$n" --class all --guidance "$s"
done
"$bin" sample --model "$run" --class all --guidance 3 --steps "$steps" --n 40 --seed 1 \
  --clip-x0 --out "$run/classes_guidance3.png"
