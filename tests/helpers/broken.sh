#!/bin/sh
# A fake Docker credential helper that misbehaves as ./mode (next to this script) says:
# hang, fail, garbage or notfound. Appends one line per run to ./runs.
dir=$(dirname "$0")
cat > /dev/null
echo "run" >> "$dir/runs"
case "$(cat "$dir/mode")" in
  hang) exec sleep 600 ;;
  fail) echo "the token service is down"; echo "helper stderr line" >&2; exit 3 ;;
  garbage) echo "<html>not json</html>" ;;
  notfound) echo "credentials not found in native keychain"; exit 1 ;;
esac
