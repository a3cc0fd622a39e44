#!/usr/bin/env bash
# Downloads, on a Debian 12 machine with internet access, the Debian packages that
# scripts/gpu_check.sh unpacks on an offline GPU machine, into DIR (default: gpu-debs/ at the
# repository root, ignored by git; the device tool carries it with `carry: ["gpu-debs"]`).
# Usage: scripts/fetch_gpu_debs.sh [DIR]
# Only `apt-get download` (no root, nothing installed here); the folder ends up with one .deb per
# package below and a SHA256SUMS file that gpu_check.sh verifies.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="${1:-$here/gpu-debs}"
# What the build finds with find_package / find_path (CMakeLists.txt), and the data set of
# `--data fashion-mnist`. zlib1g is the runtime libz.so.1 that zlib1g-dev's libz.so points at.
packages=(libgtest-dev libstb-dev nlohmann-json3-dev zlib1g-dev zlib1g libgloo-dev
  dataset-fashion-mnist)
command -v apt-get >/dev/null || { echo "fetch_gpu_debs: needs apt-get (Debian 12)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"
if ! apt-get download "${packages[@]}" >/tmp/diffuse-fetch-debs.log 2>&1; then
  tail -n 5 /tmp/diffuse-fetch-debs.log >&2
  echo "fetch_gpu_debs: apt-get download failed (run apt-get update first?)" >&2
  exit 1
fi
sha256sum ./*.deb >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS
du -sh . | awk -v d="$dir" '{print "fetch_gpu_debs: " $1 " in " d}'
ls -1 ./*.deb
