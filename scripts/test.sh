#!/usr/bin/env bash
# Runs all of wharf's tests: unit, integration (in-process fake upstream) and end-to-end (the real
# distribution registry, skopeo, htpasswd and systemd-analyze from Debian, Garage from crates.io).
# Installs those tools when missing, so it works on a fresh machine; the end-to-end tests fail
# (never skip) without them.
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
# The Docker daemon is the client of tests/e2e_docker.rs (a private dockerd, started by the test).
command -v dockerd >/dev/null || missing+=(docker.io)
# Headless Chromium loads the status page in tests/status_page.rs (console errors, charts, width).
command -v chromium >/dev/null || missing+=(chromium)
# umoci checks that an exported air-gap bundle is a standard OCI image layout.
command -v umoci >/dev/null || missing+=(umoci)
# debootstrap makes the debian:bookworm-slim base of tests/e2e_image.rs (no image registry is
# reachable): once per machine, from the Debian mirror apt uses, cached under target/e2e-cache/.
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (needed by the end-to-end tests)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Garage, a real S3-compatible object store, for the S3 blob store's tests (tests/s3_store.rs).
# Debian has no package: build it from crates.io into ~/.cargo/bin. That takes about 10 minutes
# once; the binary is reused by every later run (and found on PATH or in ~/.cargo/bin).
if ! command -v garage >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/garage" ]; then
  echo "installing garage (cargo install garage --locked; about 10 minutes, once)"
  cargo install garage --locked
fi
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

cargo test --locked "$@"
