#!/usr/bin/env bash
# Side-by-side comparison of wharf, the distribution registry's proxy mode and an nginx cache, all in
# front of the same local docker-registry upstream, on loopback, in one run. Prints two tables: the
# plain HTTP/1.1 one (all three), then the production rows (wharf vs nginx: HTTPS with HTTP/1.1 and
# HTTP/2, tail latency of a 1.6 MiB blob, 64 concurrent big pulls, a cold pull against a direct one).
#   benches/compare.sh            (REPS=5 WRK_DURATION=3s by default)
#   benches/compare.sh OLD_WHARF  (adds a column for another wharf binary to the first table: before/after)
#   ROWS=prod benches/compare.sh  (only the production rows; ROWS=base only the first table)
# Installs what it needs from Debian, builds wharf in release mode. Takes about 16 minutes (ROWS=prod
# about 6).
set -euo pipefail
cd "$(dirname "$0")/.."

# command:Debian package
missing=()
for pair in docker-registry:docker-registry skopeo:skopeo nginx:nginx wrk:wrk curl:curl openssl:openssl \
  h2load:nghttp2-client; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair##*:}")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release --locked --bin wharf
exec python3 benches/compare.py target/release/wharf "$@"
