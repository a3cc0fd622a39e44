#!/usr/bin/env bash
# Issue [recipe]: one arm per recipe choice, each trained the same number of steps from the same
# seed on Fashion-MNIST (fmnist-small, batch BATCH), then N DDIM-50 samples (eta 0, EMA weights)
# scored by ONE classifier, with and without --clip-x0. The base arm is bench/quality_vs_diffusers.sh's
# recipe (lr 5e-4, 500 warmup steps, clip 1, EMA 0.999, constant rate); every other arm changes one
# thing. Arms that change the cost of a step (width, depth, batch) need an equal wall-clock instead:
# give them --time-limit yourself (ARMS="name:options ...").
#
# usage: bench/recipe_ablation.sh [STEPS=2000] [N=1000]
#   env: BATCH (32), SEED (0), OUT (runs/recipe_ablation), DEVICE (auto), ARMS (the default list)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
steps="${1:-2000}"
n="${2:-1000}"
batch="${BATCH:-32}"
seed="${SEED:-0}"
device="${DEVICE:-auto}"
out="${OUT:-$here/runs/recipe_ablation}"
bin="$here/build/diffuse"
base=(--data fashion-mnist --model fmnist-small --steps "$steps" --batch "$batch" --seed "$seed"
  --lr 5e-4 --warmup 500 --ema-decay 0.999 --grad-clip 1 --weight-decay 0 --sample-every 0
  --ckpt-every 0 --device "$device")
default_arms=(
  "base:"
  "cosine:--lr-schedule cosine"
  "wsd:--lr-schedule wsd --lr-decay-fraction 0.2"
  "lr1e-3:--lr 1e-3"
  "warmup100:--warmup 100"
  "ema0.9995:--ema-decay 0.9995"
  "min-snr-5:--loss-weighting min-snr-5"
  "v:--prediction v"
  "v-min-snr-5:--prediction v --loss-weighting min-snr-5"
  "logit-normal:--timestep-sampler logit-normal --ts-mean 0 --ts-std 1"
  "edm-log-normal:--timestep-sampler edm-log-normal --ts-mean -1.2 --ts-std 1.2"
  "power-ema:--ema-power 0.05,0.10 --ema-snapshot-every 100"
)
if [ -n "${ARMS:-}" ]; then read -r -a arms <<<"$ARMS"; else arms=("${default_arms[@]}"); fi

mkdir -p "$out"
classifier="$out/classifier"
[ -f "$classifier/classifier.json" ] || "$bin" eval train-classifier --out "$classifier"
fd=(--n "$n" --sampler ddim --steps 50 --eta 0 --seed "$seed" --classifier "$classifier"
  --device "$device")
score() {  # model folder, eval folder
  "$bin" eval fd --model "$1" "${fd[@]}" --out "$2"
  "$bin" eval fd --model "$1" "${fd[@]}" --clip-x0 --out "$2"
}
for arm in "${arms[@]}"; do
  name="${arm%%:*}"
  read -r -a extra <<<"${arm#*:}"
  run="$out/$name"
  [ -d "$run/checkpoints" ] ||
    /usr/bin/time -f "$name: %e s" "$bin" train "${base[@]}" "${extra[@]}" --out "$run"
  score "$run" "$out/eval/$name"
  if [ -d "$run/ema_snapshots" ]; then  # post hoc: a few EMA lengths from the same snapshots
    for s in 0.03 0.05 0.10 0.15; do
      [ -d "$run/posthoc_$s" ] || "$bin" ema --run "$run" --sigma-rel "$s" --out "$run/posthoc_$s"
      score "$run/posthoc_$s" "$out/eval/$name-posthoc-$s"
    done
  fi
done

echo
echo "$steps steps at batch $batch, $n DDIM-50 samples each, one classifier ($(nproc) cores," \
  "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-28s %14s %14s %10s\n' arm "FD-FMNIST" "FD (clip x0)" "IS (clip)"
for d in "$out"/eval/*/; do
  a="$(basename "$d")"
  python3 - "$d" "$a" <<'PY'
import json, sys, os
d, a = sys.argv[1], sys.argv[2]
def get(f, k):
    p = os.path.join(d, f)
    return json.load(open(p))[k] if os.path.exists(p) else float("nan")
print(f"{a:<28} {get('fd_ddim-50.json', 'fd_fmnist'):14.2f} {get('fd_ddim-50-clip.json', 'fd_fmnist'):14.2f} "
      f"{get('fd_ddim-50-clip.json', 'is_fmnist'):10.2f}")
PY
done
