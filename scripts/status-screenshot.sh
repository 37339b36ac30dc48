#!/usr/bin/env bash
# Makes docs/status.png, the README's picture of the status page. tests/status_page.rs starts a
# wharf, pulls four images through it from its in-process fake registry (misses, then hits),
# leaves a fill in flight and a 404, and screenshots /status in headless Chromium at 1280 pixels
# wide (target/status-page.png); this script runs that test and copies the picture.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
cargo test --locked --test status_page the_status_page_renders_in_chromium -- --exact
mkdir -p docs
cp target/status-page.png docs/status.png
echo "docs/status.png: $(stat -c %s docs/status.png) bytes"
