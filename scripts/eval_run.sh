#!/usr/bin/env bash
# Evaluate a Fashion-MNIST run the way bench/RESULTS.md reports it: the NLL bound in bits/dim on
# the test split, FD-FMNIST / IS-FMNIST at DDPM-1000, DDIM-50, DDIM-10 and DPM-Solver++ 2M-20, and
# the run's HTML report. Results land in RUN/eval (nll.json, fd_SAMPLER-STEPS.json) and RUN/report.html.
#
# usage: scripts/eval_run.sh RUN [NLL_IMAGES] [FD_SAMPLES] [FD_SAMPLES_DDPM1000]
# Defaults are the GPU sizes (10000 test images, 10000 samples each); on a CPU pass smaller ones,
# e.g. `scripts/eval_run.sh runs/fmnist-demo 100 1000 250`, and compare FD-FMNIST only at equal N.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${DIFFUSE_BIN:-$here/build/diffuse}"
run="${1:?usage: scripts/eval_run.sh RUN [NLL_IMAGES] [FD_SAMPLES] [FD_SAMPLES_DDPM1000]}"
n_nll="${2:-10000}"
n_fd="${3:-10000}"
n_ddpm="${4:-$n_fd}"

"$bin" eval nll --model "$run" --n "$n_nll"
"$bin" eval fd --model "$run" --sampler ddim --steps 50 --n "$n_fd"
"$bin" eval fd --model "$run" --sampler ddim --steps 10 --n "$n_fd"
"$bin" eval fd --model "$run" --sampler dpm++2m --steps 20 --n "$n_fd"
"$bin" eval fd --model "$run" --sampler ddpm --steps 1000 --n "$n_ddpm"
"$bin" report "$run"
