#!/usr/bin/env bash
# The test command: installs what is missing, builds against LibTorch 2.11 (PyPI) and Debian's
# LibTorch 1.13, and runs the whole CTest suite on the CPU for each.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
"$here/scripts/setup.sh"
start=$(date +%s)
for flavour in pypi debian; do
  "$here/scripts/build.sh" "$flavour"
  dir="$here/build"; [ "$flavour" = debian ] && dir="$here/build-debian"
  (cd "$dir" && CUDA_VISIBLE_DEVICES="" ctest --output-on-failure -j "${DIFFUSE_TEST_JOBS:-1}")
  echo "test: $flavour passed ($(( $(date +%s) - start )) s so far)"
done
echo "test: all passed in $(( $(date +%s) - start )) s"
