#!/usr/bin/env bash
# Property-based fuzz of the server API from its spec, docs/openapi.yaml, with
# schemathesis (PyPI): generated valid and invalid requests for every
# operation, and the checks that the node never answers 5xx and that every
# answer matches the spec (status codes, content types, headers, body schemas).
#
# Installs schemathesis into a virtualenv under target/ (once), starts one
# `palaver` on a free port with a random API key, fuzzes it, and fails if any
# check failed or the node died or panicked. Every PALAVER_* variable reaches
# the node, e.g. PALAVER_REDIS_URL=redis://127.0.0.1:6379 fuzzes the Redis
# backend (the Rust test tests/tests/api_fuzz.rs does that, with its own
# redis-server).
#
# Not checked: schemathesis' positive/negative data acceptance checks. The
# spec describes valid input closely but not exactly (byte limits after
# stripping control characters, `before` xor `after`, `null` read as absent),
# and the API's answer to those is a 400 with the right code, which is the
# behaviour we want.
#
# Knobs (environment variables):
#   PALAVER_BIN=target/debug/palaver   the node binary (built if missing)
#   FUZZ_MAX_EXAMPLES=50               examples per operation and phase
#   FUZZ_TIMEOUT=600                   wall-clock bound of the schemathesis run, seconds
#   FUZZ_SEED=...                      reproduce a run
#   FUZZ_DIR=target/api-fuzz           virtualenv, node logs and reports
#   FUZZ_PYTHON=python3                interpreter for the virtualenv
#   FUZZ_SCHEMATHESIS=...              a schemathesis already installed (no venv, no PyPI)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir=${FUZZ_DIR:-$root/target/api-fuzz}
bin=${PALAVER_BIN:-$root/target/debug/palaver}
python=${FUZZ_PYTHON:-python3}
examples=${FUZZ_MAX_EXAMPLES:-50}
limit=${FUZZ_TIMEOUT:-600}
mkdir -p "$dir"

venv=$dir/venv
schemathesis=${FUZZ_SCHEMATHESIS:-$venv/bin/schemathesis}
if [ -z "${FUZZ_SCHEMATHESIS:-}" ] && ! command -v "$python" >/dev/null; then
    echo "api-fuzz: $python not found; install Python 3 with venv and pip (Debian: apt-get install python3 python3-venv python3-pip)" >&2
    exit 2
fi
if [ -n "${FUZZ_SCHEMATHESIS:-}" ] && [ ! -x "$schemathesis" ]; then
    echo "api-fuzz: FUZZ_SCHEMATHESIS=$schemathesis is not executable" >&2
    exit 2
fi
# A venv copied or moved with its checkout keeps scripts naming the old path.
if [ -z "${FUZZ_SCHEMATHESIS:-}" ] && [ -x "$schemathesis" ] && ! "$schemathesis" --version >/dev/null 2>&1; then
    echo "api-fuzz: $venv does not run here (moved or copied); recreating it" >&2
    rm -rf "$venv"
fi
if [ ! -x "$schemathesis" ]; then
    echo "api-fuzz: installing schemathesis into $venv" >&2
    if ! "$python" -m venv "$venv"; then
        echo "api-fuzz: cannot create a virtualenv; install python3-venv" >&2
        exit 2
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi

if [ ! -x "$bin" ]; then
    (cd "$root" && cargo build --quiet -p palaver-gateway)
fi

key="fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
out=$dir/node.out
log=$dir/node.log
# The fuzzer sends thousands of requests from one key: no API budget here.
PALAVER_API_KEY=$key PALAVER_API_RATE=off RUST_LOG=${RUST_LOG:-warn} \
    "$bin" --listen 127.0.0.1:0 >"$out" 2>"$log" &
node=$!
trap 'kill "$node" 2>/dev/null || true; wait "$node" 2>/dev/null || true' EXIT

addr=
for _ in $(seq 100); do
    addr=$(sed -n 's/^palaver listening on http:\/\/\([^ ]*\) .*/\1/p' "$out")
    [ -n "$addr" ] && break
    kill -0 "$node" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$addr" ]; then
    echo "api-fuzz: palaver did not start; its log:" >&2
    cat "$log" >&2
    exit 1
fi
echo "api-fuzz: fuzzing http://$addr (log: $log)" >&2

seed=()
[ -n "${FUZZ_SEED:-}" ] && seed=(--seed "$FUZZ_SEED")
status=0
# schemathesis keeps a cache (.schemathesis/) in its working directory: keep it under target/.
cd "$dir"
timeout "$limit" "$schemathesis" run "http://$addr/api/v1/openapi.yaml" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$examples" \
    --workers 1 \
    --request-timeout 10 \
    --report junit --report-dir "$dir/report" \
    "${seed[@]}" || status=$?

if ! kill -0 "$node" 2>/dev/null; then
    echo "api-fuzz: the node died during the fuzz; its log:" >&2
    cat "$log" >&2
    exit 1
fi
if grep -q "panicked" "$log"; then
    echo "api-fuzz: the node panicked; its log:" >&2
    cat "$log" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "api-fuzz: schemathesis failed (exit $status)" >&2
fi
exit "$status"
