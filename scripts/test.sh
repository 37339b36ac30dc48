#!/usr/bin/env bash
# Runs all of wharf's tests: unit, integration (in-process fake upstream) and end-to-end (the real
# distribution registry and skopeo from Debian). Installs those tools with apt-get when missing,
# so it works on a fresh machine; the end-to-end tests fail (never skip) without them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (needed by the end-to-end tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --locked "$@"
