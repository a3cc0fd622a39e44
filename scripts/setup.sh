#!/usr/bin/env bash
# Installs everything diffuse needs on Debian 12: Debian's packages, and LibTorch 2.11 from PyPI in a
# project-local virtual environment (.venv; only its LibTorch and CMake files are used).
# Idempotent; runs as root or through sudo. DIFFUSE_SKIP_PYPI=1 keeps to Debian's libtorch-dev.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi
log="${TMPDIR:-/tmp}/diffuse-setup-apt.log"

packages=(cmake g++ ninja-build libgtest-dev libstb-dev nlohmann-json3-dev zlib1g-dev
  dataset-fashion-mnist libtorch-dev libgloo-dev libdnnl-dev python3 python3-venv python3-pip ca-certificates)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "setup: apt-get failed (full log: $log)" >&2
    exit 1
  fi
fi

if [ "${DIFFUSE_SKIP_PYPI:-0}" != "1" ]; then
  venv="$here/.venv"
  if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
    echo "setup: installing torch==2.11.0 from PyPI into $venv (LibTorch for the C++ build)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check torch==2.11.0
  fi
fi
echo "setup: done"
