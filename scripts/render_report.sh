#!/usr/bin/env bash
# Renders a diffuse report page (diffuse report RUN) in headless Chromium to a PNG screenshot, to
# check that it displays. Installs Debian's chromium package when it is missing (root or sudo).
#
#   scripts/render_report.sh RUN/report.html [OUT.png] [WIDTH] [HEIGHT]
set -euo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
  sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
  exit $([[ $# -lt 1 ]] && echo 1 || echo 0)
fi
html=$1
out=${2:-${html%.html}.png}
width=${3:-1200}
height=${4:-4000}
[[ -f $html ]] || { echo "render_report.sh: $html: no such file" >&2; exit 1; }

browser=""
for b in chromium chromium-browser google-chrome; do
  if command -v "$b" >/dev/null 2>&1; then browser=$b; break; fi
done
if [[ -z $browser ]]; then
  echo "render_report.sh: installing chromium (Debian package)" >&2
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  browser=chromium
fi

abs=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
out_abs=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
# --no-sandbox: Chromium refuses to run as root otherwise (containers, CI).
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size="$width,$height" --screenshot="$out_abs" "file://$abs" 2>/dev/null
[[ -s $out_abs ]] || { echo "render_report.sh: no screenshot written" >&2; exit 1; }
echo "$out_abs"
