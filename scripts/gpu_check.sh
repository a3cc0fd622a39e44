#!/usr/bin/env bash
# One command for a (rare, short) GPU slot: builds diffuse with its CUDA kernels, runs every GPU
# test, prints the bench table of bench/RESULTS.md as JSON lines beside bench/pytorch_reference.py's
# eager and torch.compile figures, and ends saying which switches (--channels-last, --fused-norm,
# --cuda-graph) are safe to turn on by default.
#
# Usage: scripts/gpu_check.sh [--no-bench] [--no-reference]
# Environment:
#   DIFFUSE_DEBS    folder of the Debian packages the build needs, for a machine without them and
#                   without internet (default: gpu-debs/ at the repository root; fill it on a
#                   Debian 12 machine with internet with scripts/fetch_gpu_debs.sh). Each package
#                   already installed system-wide is used as it is; the others are unpacked
#                   (dpkg-deb -x, no root) under /tmp/diffuse-gpu-deps.
#   DIFFUSE_GPU_CHECK_BUDGET  seconds the whole check may take (default 480); bench rows and the
#                   torch.compile figures that would start past it are skipped, and say so.
#   DIFFUSE_JOBS    build parallelism (default: nproc).
#   DIFFUSE_GPU_CHECK_DRY=1  rehearsal on a machine without a GPU: no GPU preflight, every
#                   package unpacked from DIFFUSE_DEBS even when installed, a configure-only run
#                   against them in /tmp, the tests (which skip) from the existing build/, no bench.
# Needs: an NVIDIA GPU (nvidia-smi), python3 whose torch is a CUDA build (its LibTorch is what
# diffuse builds against), nvcc, cmake, ninja. bench/pytorch_reference.py also needs diffusers;
# without it those rows are skipped.
# Output: everything under build-gpu/ (build) and build-gpu/gpu_check/ (logs, bench.jsonl,
# tests.txt). Exit status 0 when every GPU test passed.
#
# Timed on the 2-core CPU machine of this workplace (no GPU, load 8-10 from other engineers'
# builds; bench/RESULTS.md, section [gpu-ready]), 2026-12-04:
#   without a GPU the preflight refuses in 0.04 s ("no nvidia-smi: this is not a GPU machine");
#   DIFFUSE_GPU_CHECK_DRY=1: 56 s in all: torch prefix 12 s, the 7 .debs unpacked 2 s, configure
#   against them 28 s, the six GPU test filters' skip paths 14 s, the verdict < 1 s.
#   A cold build was not run here; its parts were, without ccache: the precompiled header 53 s
#   of CPU (serial, before every other object), models/unet.cpp 16 s of CPU; the targets built
#   are 80 compiles and one nvcc. At 16 cores that reads as about 1 min for the header plus
#   80 x ~16 s / 16 = ~1.5 min, so ~3 min of the 8, leaving ~4 min for the tests and the bench.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
start=$(date +%s)
budget="${DIFFUSE_GPU_CHECK_BUDGET:-480}"
bench=1
reference=1
for a in "$@"; do
  case "$a" in
    --no-bench) bench=0 ;;
    --no-reference) reference=0 ;;
    *) echo "gpu_check: unknown option '$a' (--no-bench, --no-reference)" >&2; exit 2 ;;
  esac
done
elapsed() { echo $(($(date +%s) - start)); }
left() { echo $((budget - $(elapsed))); }
say() { echo "gpu_check [$(elapsed) s]: $*"; }
die() { echo "gpu_check: $*" >&2; exit 1; }

dry="${DIFFUSE_GPU_CHECK_DRY:-0}"
# --- preflight: everything that can be wrong is found before the build starts -----------------
if [ "$dry" = 1 ]; then
  say "dry run: GPU preflight skipped"
  gpu="none (dry run)"
  bench=0
else
command -v nvidia-smi >/dev/null || die "no nvidia-smi: this is not a GPU machine"
gpu="$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1)"
[ -n "$gpu" ] || die "nvidia-smi sees no GPU"
for tool in python3 cmake ninja; do
  command -v "$tool" >/dev/null || die "$tool not found on PATH"
done
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
[ -x "$nvcc" ] || die "nvcc not found (PATH or /usr/local/cuda/bin): the CUDA kernels need it"
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" ||
  die "python3 has no torch; the build uses its LibTorch"
python3 -c 'import torch, sys; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)' ||
  die "python3's torch $(python3 -c 'import torch; print(torch.__version__)') is not a CUDA build or sees no GPU"
fi
torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" ||
  torch_prefix="$(cd "$here" && .venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)"
nvcc="$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)"
say "GPU: $gpu; LibTorch from $torch_prefix; $("$nvcc" --version | tail -n 1)"

out="$here/build-gpu/gpu_check"
mkdir -p "$out"

# --- Debian build dependencies: installed, or unpacked from DIFFUSE_DEBS ------------------------
debs="${DIFFUSE_DEBS:-$here/gpu-debs}"
root=/tmp/diffuse-gpu-deps
cmake_extra=()
prefixes="$torch_prefix"
need() {  # need PACKAGE FILE_IT_PROVIDES: unpack PACKAGE's .deb unless FILE is installed
  local pkg="$1" file="$2"
  [ -e "$file" ] && [ "$dry" != 1 ] && return 0
  local deb
  deb="$(ls "$debs"/"${pkg}"_*.deb 2>/dev/null | head -n 1)"
  [ -n "$deb" ] || die "$file missing and no ${pkg}_*.deb in $debs (run scripts/fetch_gpu_debs.sh on a machine with internet, then carry gpu-debs/)"
  unpack "$deb"
  unpacked=1
}
unpack() {  # dpkg-deb -x, or the same in python3 where there is no dpkg (a .deb is an ar archive)
  if command -v dpkg-deb >/dev/null; then
    dpkg-deb -x "$1" "$root" || die "cannot unpack $1"
    return
  fi
  python3 - "$1" "$root" <<'PY' || die "cannot unpack $1"
import io, sys, tarfile
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"!<arch>\n", "not a .deb"
i = 8
while i < len(data):
    name, size = data[i:i + 16].decode().strip().rstrip("/"), int(data[i + 48:i + 58])
    if name.startswith("data.tar"):
        tarfile.open(fileobj=io.BytesIO(data[i + 60:i + 60 + size])).extractall(sys.argv[2])
    i += 60 + size + (size & 1)
PY
}
unpacked=0
mkdir -p "$root"
if [ -f "$debs/SHA256SUMS" ]; then
  (cd "$debs" && sha256sum --quiet -c SHA256SUMS) || die "$debs: .deb checksums do not match SHA256SUMS"
fi
need libgtest-dev /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake
need libstb-dev /usr/include/stb/stb_image.h
need nlohmann-json3-dev /usr/share/cmake/nlohmann_json/nlohmann_jsonConfig.cmake
need zlib1g-dev /usr/include/zlib.h
need libgloo-dev /usr/include/gloo/context.h
if [ ! -d /usr/share/datasets/fashion-mnist ] || [ "$dry" = 1 ]; then
  # Not needed by the GPU tests or the bench (synthetic data); unpacked for `--data mnist:DIR`.
  deb="$(ls "$debs"/dataset-fashion-mnist_*.deb 2>/dev/null | head -n 1)"
  [ -n "$deb" ] && unpack "$deb" &&
    say "Fashion-MNIST: --data mnist:$root/usr/share/datasets/fashion-mnist"
fi
if [ "$unpacked" = 1 ]; then
  u="$root/usr"
  prefixes="$prefixes;$u/lib/x86_64-linux-gnu/cmake;$u/share/cmake"
  [ -e /usr/include/stb/stb_image.h ] && [ "$dry" != 1 ] || cmake_extra+=("-DSTB_INCLUDE_DIR=$u/include/stb")
  [ -e /usr/include/gloo/context.h ] && [ "$dry" != 1 ] || cmake_extra+=("-DDIFFUSE_GLOO_INCLUDE_DIR=$u/include")
  if [ ! -e /usr/include/zlib.h ] || [ "$dry" = 1 ]; then
    cmake_extra+=("-DZLIB_INCLUDE_DIR=$u/include")
    # The static library: the unpacked libz.so is a link to the runtime package's file.
    cmake_extra+=("-DZLIB_LIBRARY=$u/lib/x86_64-linux-gnu/libz.a")
  fi
  say "dependencies unpacked under $root"
fi

# --- build -------------------------------------------------------------------------------------
dir="$here/build-gpu"
[ "$dry" = 1 ] && dir=/tmp/diffuse-gpu-check-dry
say "configuring (LibTorch from $torch_prefix)"
cmake -S "$here" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefixes" \
  -DCMAKE_CUDA_COMPILER="$nvcc" "${cmake_extra[@]}" >"$out/configure.log" 2>&1 ||
  { tail -n 30 "$out/configure.log"; die "configure failed (log: $out/configure.log)"; }
grep -q "own CUDA kernels ON" "$out/configure.log" ||
  die "configure found no CUDA kernels to build (see $out/configure.log)"
if [ "$dry" = 1 ]; then
  grep -E "GTest|nlohmann|ZLIB|STB|GLOO" "$dir/CMakeCache.txt" | grep -E "_DIR:|INCLUDE_DIR|LIBRARY:" | grep "$root" |
    sed 's/^/  from the .debs: /'
  dir="$here/build"
  say "dry run: no build; tests from $dir"
else
say "building with ${DIFFUSE_JOBS:-$(nproc)} jobs"
# Only what the check runs: the CLI and the test programs with GPU tests.
ninja -C "$dir" -j "${DIFFUSE_JOBS:-$(nproc)}" diffuse test_models_fused test_train_graph test_train \
  test_models test_core >"$out/build.log" 2>&1 ||
  { grep -m 20 -B 2 -A 8 "error" "$out/build.log"; die "build failed (log: $out/build.log)"; }
say "built"
fi

# --- every GPU test ----------------------------------------------------------------------------
# name|binary|gtest filter; a suite's result decides the switch it names (or none).
suites=(
  "fused-norm|test_models_fused|GroupNormActFusedGpu.*:-GroupNormActFusedGpu.ChannelsLastUNet*"
  "channels-last|test_models_fused|GroupNormActFusedGpu.ChannelsLastUNet*"
  "cuda-graph|test_train_graph|GraphedTrainStepGpu.*:GraphedForwardGpu.*"
  "-|test_train|TrainerGpu.*"
  "-|test_models|UNetGolden.PrecisionOnCuda*"
  "-|test_core|Precision.*"
)
: >"$out/tests.txt"
failed=0
for s in "${suites[@]}"; do
  IFS='|' read -r switch bin filter <<<"$s"
  log="$out/$bin.$(echo "$filter" | tr -c 'A-Za-z0-9' _ | cut -c1-40).log"
  if "$dir/$bin" --gtest_filter="$filter" >"$log" 2>&1; then r=pass; else r=FAIL; failed=1; fi
  skipped="$(grep -oE '^\[  SKIPPED \] [0-9]+ test' "$log" | grep -oE '[0-9]+' || echo 0)"
  echo "$switch $r $bin $filter skipped=$skipped" >>"$out/tests.txt"
  say "tests $bin ($filter): $r$([ "$skipped" -gt 0 ] && echo ", $skipped skipped")"
  [ "$r" = FAIL ] && grep -E '^\[  FAILED  \]|Failure|error' "$log" | head -n 12
done

# --- bench table (bench/RESULTS.md, ddpm-cifar10) ----------------------------------------------
jsonl="$out/bench.jsonl"
: >"$jsonl"
row() {  # row MIN_SECONDS_LEFT ARGS...: one diffuse bench line, unless the budget is spent
  local need="$1"; shift
  if [ "$(left)" -lt "$need" ]; then
    echo "{\"skipped\": \"$*\", \"why\": \"budget of $budget s\"}" | tee -a "$jsonl"
    return
  fi
  "$dir/diffuse" bench "$@" --model ddpm-cifar10 --json 2>>"$out/bench.err" | tail -n 1 | tee -a "$jsonl" ||
    echo "{\"failed\": \"$*\"}" | tee -a "$jsonl"
}
if [ "$bench" = 1 ]; then
  say "bench (JSON lines, also in $jsonl)"
  r="--repeats 5 --warmup 2"
  for layout in "" "--channels-last" "--channels-last --fused-norm"; do
    # shellcheck disable=SC2086
    {
      row 60 train --batch 128 $r $layout
      row 60 train --batch 128 $r --cuda-graph $layout
      row 30 forward --batch 1 $r $layout
      row 30 forward --batch 1 $r --cuda-graph $layout
      row 30 forward --batch 256 $r $layout
      row 40 sample --batch 1 --sampler ddim --steps 50 --repeats 3 $layout
      row 40 sample --batch 1 --sampler ddim --steps 50 --repeats 3 --cuda-graph $layout
      row 40 sample --batch 256 --sampler ddim --steps 50 --repeats 3 $layout
    }
  done
  row 90 sample --batch 256 --sampler ddpm --steps 1000 --repeats 1 --warmup 0 --channels-last --fused-norm
fi
if [ "$bench" = 1 ] && [ "$reference" = 1 ]; then
  if python3 -c 'import diffusers' 2>/dev/null; then
    "$dir/diffuse" info --config ddpm-cifar10 >"$out/cfg.json"
    ref() {  # ref MIN_SECONDS_LEFT ARGS...
      local need="$1"; shift
      if [ "$(left)" -lt "$need" ]; then
        echo "{\"skipped\": \"pytorch_reference $*\", \"why\": \"budget of $budget s\"}" | tee -a "$jsonl"
        return
      fi
      python3 "$here/bench/pytorch_reference.py" "$@" --device cuda --bf16 2>>"$out/bench.err" |
        tail -n 1 | sed 's/^{/{"source": "pytorch_reference", /' | tee -a "$jsonl"
    }
    ref 30 forward "$out/cfg.json" --batch 1
    ref 30 forward "$out/cfg.json" --batch 256
    ref 40 train "$out/cfg.json" --batch 128
    ref 120 forward "$out/cfg.json" --batch 256 --compile
    ref 150 train "$out/cfg.json" --batch 128 --compile
  else
    say "python3 has no diffusers: bench/pytorch_reference.py rows skipped"
  fi
fi

# --- verdict -----------------------------------------------------------------------------------
say "verdict"
python3 - "$out/tests.txt" "$jsonl" <<'EOF'
import json, sys
tests = [l.split() for l in open(sys.argv[1]) if l.strip()]
rows = []
for l in open(sys.argv[2]):
    try:
        rows.append(json.loads(l))
    except ValueError:
        pass
def ok(switch):
    mine = [t for t in tests if t[0] == switch]
    return bool(mine) and all(t[1] == "pass" and t[4] == "skipped=0" for t in mine)
def ips(what, batch, graph, cl, fused, **kw):
    for r in rows:
        if (r.get("bench") == what and r.get("batch") == batch and r.get("cuda_graph") == graph
                and r.get("channels_last") == cl and r.get("fused_norm") == fused
                and all(r.get(k) == v for k, v in kw.items())):
            return r.get("images_per_s")
    return None
def faster(a, b):  # a at least as fast as b (2 % noise allowed); None when unmeasured
    return None if a is None or b is None else a >= 0.98 * b
checks = {
    "--channels-last": [faster(ips("train", 128, False, True, False), ips("train", 128, False, False, False)),
                        faster(ips("forward", 256, False, True, False), ips("forward", 256, False, False, False))],
    "--fused-norm": [faster(ips("train", 128, False, True, True), ips("train", 128, False, True, False)),
                     faster(ips("forward", 256, False, True, True), ips("forward", 256, False, True, False))],
    "--cuda-graph": [faster(ips("train", 128, True, False, False), ips("train", 128, False, False, False)),
                     faster(ips("forward", 1, True, False, False), ips("forward", 1, False, False, False))],
}
tests_of = {"--channels-last": "channels-last", "--fused-norm": "fused-norm", "--cuda-graph": "cuda-graph"}
for switch, speed in checks.items():
    t = ok(tests_of[switch])
    if not t:
        print(f"{switch}: NOT safe: its GPU tests failed or skipped")
    elif any(s is None for s in speed):
        print(f"{switch}: tests pass; bench incomplete: do not turn on by default yet")
    elif all(speed):
        print(f"{switch}: SAFE to turn on by default on CUDA (tests pass, not slower)")
    else:
        print(f"{switch}: correct but slower on this GPU: leave off")
others = [t for t in tests if t[0] == "-" and t[1] != "pass"]
if others:
    print("other GPU tests failed: " + ", ".join(t[2] for t in others))
EOF
say "done in $(elapsed) s (budget $budget s); logs in $out"
exit "$failed"
