#!/bin/sh
# A fake Docker credential helper (docker-credential-helpers protocol) for tests/credential_helpers.rs.
# Copied next to its state: hands out the password in ./current (next to this script), and appends
# one line per run to ./runs, so a test counts the runs. The server comes on standard input.
dir=$(dirname "$0")
[ "$1" = "get" ] || { echo "unknown command $1"; exit 1; }
server=$(cat)
echo "run $server" >> "$dir/runs"
# A short pause widens the window in which concurrent requests would start a second run.
sleep 0.2
echo "fake helper: handing out a credential for $server" >&2
printf '{"ServerURL":"%s","Username":"robot","Secret":"%s"}\n' "$server" "$(cat "$dir/current")"
