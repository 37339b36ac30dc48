#!/usr/bin/env bash
# wharf replicas on a shared object store (one Garage node), on loopback, in one run: hits from the
# hot tier vs the object store, cold pulls through one replica vs one of three, upstream GETs for a
# herd over three replicas, and what a pull costs the object store. Prints tables.
#   benches/replicas.sh          (REPS=3 HERD=30 by default)
# Installs what it needs from Debian, builds Garage once (about 10 minutes, reused from
# ~/.cargo/bin) and wharf in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in docker-registry skopeo curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
command -v garage >/dev/null || cargo install garage --locked
cargo build --release --locked --bin wharf
exec python3 benches/replicas.py target/release/wharf "$@"
