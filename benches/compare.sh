#!/usr/bin/env bash
# Side-by-side comparison of wharf, the distribution registry's proxy mode and an nginx cache, all in
# front of the same local docker-registry upstream, on loopback, in one run. Prints one table.
#   benches/compare.sh            (REPS=5 WRK_DURATION=3s by default)
#   benches/compare.sh OLD_WHARF  (adds a column for another wharf binary: before/after a change)
# Installs what it needs from Debian, builds wharf in release mode. Takes about 10 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in docker-registry skopeo nginx wrk curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked --bin wharf
exec python3 benches/compare.py target/release/wharf "$@"
