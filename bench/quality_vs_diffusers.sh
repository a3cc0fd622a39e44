#!/usr/bin/env bash
# Same-budget sample quality, diffuse against diffusers, on any machine (a CPU is enough).
#
# Both train the same U-Net (diffuse's fmnist-small preset, in diffusers' UNet2DModel config) on
# Fashion-MNIST for the same number of steps with the same recipe: AdamW lr 5e-4 (betas 0.9/0.999,
# no weight decay), 500 linear warmup steps, gradient clipping at 1, EMA 0.999 with the
# (1+n)/(10+n) warmup, L_simple, linear betas, T = 1000, 28x28 padded to 32x32 with -1, no
# flips, fp32 on the CPU (bf16 autocast on CUDA for both). Then N DDIM-50 samples (eta 0, EMA
# weights) of each are scored with ONE classifier (diffuse eval train-classifier): FD-FMNIST and
# IS-FMNIST. Samples of both models are drawn through diffuse's sampler with the same seeds (so
# the comparison is of the training alone), with and without clipping x_0, and the diffusers model
# is also sampled by diffusers' own DDIMScheduler (a cross-check of the sampler).
#
# usage: bench/quality_vs_diffusers.sh [STEPS=2000] [N=1000]
#   env: BATCH (32), SEED (0), OUT (runs/quality_vs_diffusers), DEVICE (auto)
# diffusers and numpy are installed from PyPI into the project's .venv, for this benchmark only.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
steps="${1:-2000}"
n="${2:-1000}"
batch="${BATCH:-32}"
seed="${SEED:-0}"
device="${DEVICE:-auto}"
out="${OUT:-$here/runs/quality_vs_diffusers}"
bin="$here/build/diffuse"
py="$here/.venv/bin/python"

"$here/scripts/setup.sh"
"$here/scripts/build.sh" pypi >/dev/null
"$py" -c 'import diffusers, numpy' 2>/dev/null ||
  "$here/.venv/bin/pip" install -q --disable-pip-version-check diffusers==0.42.1 numpy

mkdir -p "$out"
"$bin" info --config fmnist-small >"$out/unet_config.json"
recipe=(--lr 5e-4 --warmup 500 --ema-decay 0.999 --grad-clip 1 --steps "$steps" --batch "$batch"
  --seed "$seed")

if [ ! -d "$out/diffuse/checkpoints" ]; then
  "$bin" train --data fashion-mnist --model "$out/unet_config.json" --out "$out/diffuse" \
    "${recipe[@]}" --weight-decay 0 --sample-every 0 --ckpt-every 0 --device "$device"
fi
if [ ! -f "$out/diffusers/unet/diffusion_pytorch_model.safetensors" ]; then
  torch_device="cpu"
  [ "$device" != cpu ] && "$bin" info --require-cuda >/dev/null 2>&1 && torch_device="cuda"
  "$py" "$here/bench/train_diffusers.py" --config "$out/unet_config.json" --out "$out/diffusers" \
    "${recipe[@]}" --sample-n "$n" --sample-out "$out/diffusers_pipeline_ddim50.npy" \
    --device "$torch_device"
fi

classifier="$out/classifier"
[ -f "$classifier/classifier.json" ] || "$bin" eval train-classifier --out "$classifier"

fd=(--n "$n" --sampler ddim --steps 50 --eta 0 --seed "$seed" --classifier "$classifier"
  --device "$device")
for who in diffuse diffusers; do
  "$bin" eval fd --model "$out/$who" "${fd[@]}" --out "$out/eval/$who"
  "$bin" eval fd --model "$out/$who" "${fd[@]}" --clip-x0 --out "$out/eval/$who"
done
"$bin" eval fd --samples "$out/diffusers_pipeline_ddim50.npy" --classifier "$classifier" \
  --device "$device" --out "$out/eval/diffusers_pipeline"

echo
echo "same budget: $steps steps at batch $batch, $n DDIM-50 samples each, one classifier"
printf '%-44s %12s %10s\n' "model (sampler)" "FD-FMNIST" "IS-FMNIST"
for f in "$out"/eval/diffuse/fd_ddim-50.json "$out"/eval/diffusers/fd_ddim-50.json \
  "$out"/eval/diffuse/fd_ddim-50-clip.json "$out"/eval/diffusers/fd_ddim-50-clip.json \
  "$out"/eval/diffusers_pipeline/fd_samples.json; do
  "$py" - "$f" <<'EOF'
import json, sys, os
path = sys.argv[1]
j = json.load(open(path))
who = path.split("/eval/")[1].split("/")[0]
how = ("diffusers' DDIMScheduler, clip_sample" if who == "diffusers_pipeline"
       else "diffuse DDIM-50" + (", clip x0" if j.get("clip_x0") else ""))
print(f"{who.split('_')[0] + ' (' + how + ')':<44} {j['fd_fmnist']:12.3f} {j['is_fmnist']:10.3f}")
EOF
done
