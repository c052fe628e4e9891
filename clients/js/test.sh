#!/usr/bin/env bash
# palaver-client's checks: install (npm ci), build, check that the checked-in
# builds (dist/ and the web chat's bundle) match src/, and run the suite
# against real `palaver` and `redis-server` processes. Needs the gateway
# binary: built with cargo when neither target/debug nor target/release has
# it (PALAVER_BIN picks another).
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"

if [ -z "${PALAVER_BIN:-}" ] && [ ! -x "$root/target/debug/palaver" ] && [ ! -x "$root/target/release/palaver" ]; then
  (cd "$root" && cargo build -p palaver-gateway)
fi
command -v redis-server >/dev/null || { echo "clients/js/test.sh: redis-server is needed (apt-get install redis-server)" >&2; exit 1; }
command -v npm >/dev/null || { echo "clients/js/test.sh: Node.js >= 20 and npm are needed (apt-get install nodejs npm)" >&2; exit 1; }

npm ci --no-audit --no-fund
npm run check
npm test
