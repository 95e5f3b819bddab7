#!/usr/bin/env bash
# Render RUN_DIR/report.html to a PNG with headless Chromium, to check the report by eye.
# Usage: scripts/screenshot_report.sh RUN_DIR OUT.png [WIDTHxHEIGHT]   (default 1200x2400)
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 RUN_DIR OUT.png [WIDTHxHEIGHT]" >&2
  exit 2
fi

run_dir=$1
out=$2
size=${3:-1200x2400}
report="$(cd "$run_dir" && pwd)/report.html"
[[ -f "$report" ]] || { echo "no report.html in $run_dir" >&2; exit 1; }

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n "$browser" ]] || { echo "chromium not found (apt-get install -y chromium)" >&2; exit 1; }

out_abs="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

# A throwaway profile and no background traffic: the page is self-contained and renders offline.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --hide-scrollbars --user-data-dir="$profile" \
  --screenshot="$out_abs" --window-size="${size/x/,}" "file://$report" 2>/dev/null

[[ -s "$out_abs" ]] || { echo "screenshot failed: $out_abs" >&2; exit 1; }
echo "$out_abs"
