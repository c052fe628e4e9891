#!/usr/bin/env bash
# The whole test suite, also on a fresh machine: installs what the tests
# start (Debian packages, when missing and running as root), then runs every
# test. A test whose tool is still missing fails and says what to install.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p palaver-hub`).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run: one line each, the command that proves it installed.
need_apt=()
command -v redis-server >/dev/null || need_apt+=(redis-server)     # cluster tests spawn their own
command -v redis-cli >/dev/null || need_apt+=(redis-tools)        # Redis Cluster tests: redis-cli --cluster create
command -v haproxy >/dev/null || need_apt+=(haproxy)               # load balancer tests (deploy/haproxy.cfg)
command -v chromium >/dev/null || need_apt+=(chromium)             # browser tests (headless)
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)  # and their WebDriver
command -v python3 >/dev/null || need_apt+=(python3)               # the API fuzz (schemathesis, PyPI)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv python3-pip)
command -v npm >/dev/null || need_apt+=(nodejs npm)                # clients/js: the JavaScript client's suite
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "missing: ${need_apt[*]} — install them (apt-get install ${need_apt[*]}) or run this as root;" \
      "the tests that need them will fail" >&2
  fi
fi

# Installs of other kinds: schemathesis (PyPI) is installed by scripts/api-fuzz.sh
# into target/api-fuzz/venv; clients/js/test.sh runs `npm ci` (package-lock.json).

cargo test --workspace "$@"
# With no arguments, the whole suite: also the JavaScript client's, against the
# palaver binary the cargo run just built.
if [ $# -eq 0 ]; then
  PALAVER_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/palaver" bash clients/js/test.sh
fi
