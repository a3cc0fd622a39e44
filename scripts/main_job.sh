#!/usr/bin/env bash
# The main job: install, build, train the small preset on Fashion-MNIST and write a sample grid.
# On a CPU the training is bounded to a few minutes (DIFFUSE_TRAIN_SECONDS, default 480); with a CUDA
# build on a GPU machine it trains 30000 steps at a larger batch instead.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh"
"$here/scripts/build.sh" pypi
bin="$here/build/diffuse"
run="${DIFFUSE_RUN:-$here/runs/fmnist-demo}"
if "$bin" info --require-cuda >/dev/null 2>&1; then
  "$bin" train --data fashion-mnist --model fmnist-small --out "$run" --steps 30000 --batch 128 \
    --lr 5e-4 --ema-decay 0.999 --sample-every 5000 --ckpt-every 5000
else
  "$bin" train --data fashion-mnist --model fmnist-small --out "$run" --steps 100000 --batch 32 \
    --lr 1e-3 --warmup 200 --ema-decay 0.995 --time-limit "${DIFFUSE_TRAIN_SECONDS:-480}" \
    --sample-every 0 --ckpt-every 500 --log-every 25
fi
"$bin" sample --model "$run" --sampler ddim --steps 50 --n 64 --seed 1 --clip-x0 --out "$run/samples_ddim50.png"
echo
echo "main job: sample grid written to $run/samples_ddim50.png"
