#!/usr/bin/env bash
# Configures and builds diffuse. Usage: scripts/build.sh [pypi|debian] [BUILD_DIR]
#   pypi   (default) LibTorch 2.11 from the project's .venv (made by scripts/setup.sh); CUDA paths on
#   debian Debian's libtorch-dev 1.13, CPU only
# The build folder defaults to build/ (pypi) or build-debian/ (debian).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
flavour="${1:-pypi}"
case "$flavour" in
  pypi)
    dir="${2:-$here/build}"
    prefix="$("$here/.venv/bin/python" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)" ||
      { echo "build: no LibTorch in $here/.venv; run scripts/setup.sh first" >&2; exit 1; }
    ;;
  debian)
    dir="${2:-$here/build-debian}"
    prefix="/usr/lib/x86_64-linux-gnu/cmake"
    ;;
  *) echo "build: unknown flavour '$flavour' (pypi or debian)" >&2; exit 2 ;;
esac
jobs="${DIFFUSE_JOBS:-$(nproc)}"
cmake -S "$here" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
ninja -C "$dir" -j "$jobs"
echo "build: $flavour build in $dir"
