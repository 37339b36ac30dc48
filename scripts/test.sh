#!/usr/bin/env bash
# Runs all of wharf's tests: unit, integration (in-process fake upstream) and end-to-end (the real
# distribution registry, skopeo, htpasswd and systemd-analyze from Debian). Installs those tools with
# apt-get when missing, so it works on a fresh machine; the end-to-end tests fail (never skip)
# without them.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
# htpasswd -B makes the client-auth test's password file, curl is its HTTP/2 client; systemd-analyze
# checks systemd/wharf.service.
command -v htpasswd >/dev/null || missing+=(apache2-utils)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v curl >/dev/null || missing+=(curl)
# umoci checks that an exported air-gap bundle is a standard OCI image layout.
command -v umoci >/dev/null || missing+=(umoci)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (needed by the end-to-end tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --locked "$@"
