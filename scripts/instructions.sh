#!/usr/bin/env bash
# Counts a gateway's user-space instructions per chat message with
# valgrind's callgrind: a repeatable figure on a machine whose CPU-time
# readings move by ±10-25 % between identical runs (docs/benchmarks.md).
#
#   scripts/instructions.sh [palaver binary]   (default target/release/palaver)
#
# The gateway runs under callgrind in memory mode (REDIS_URL=redis://... for
# the Redis backend); palaver-loadgen drives the chat shape at a low rate
# (100 rooms x 2 members, 1 msg/s each: 200 msgs/s, which callgrind's ~50x
# slowdown still serves on time). Counters are zeroed once the joins are done
# and dumped 14 s later, so the figure covers sending only. The kernel's share
# (socket calls) is not counted: compare builds with it, not machines.
#
#   INSTR_LABEL=name   names the output files under target/instructions/
#   INSTR_PORT=7306    the gateway's port
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${1:-target/release/palaver}
LOADGEN=target/release/palaver-loadgen
LABEL=${INSTR_LABEL:-run}
PORT=${INSTR_PORT:-7306}
OUT=target/instructions
RATE=200 # total msgs/s: 200 clients x 1 msg/s
WINDOW=14

for tool in valgrind callgrind_control callgrind_annotate curl; do
  command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required" >&2; exit 1; }
done
[ -x "$BIN" ] && [ -x "$LOADGEN" ] || {
  echo "instructions.sh: build first: cargo build --release -p palaver-gateway -p palaver-loadgen" >&2
  exit 1
}
mkdir -p "$OUT"
rm -f "$OUT/$LABEL".*

backend=()
[ -n "${REDIS_URL:-}" ] && backend=(--redis-url "$REDIS_URL")
valgrind --tool=callgrind --callgrind-out-file="$OUT/$LABEL.%p" "$BIN" --listen "127.0.0.1:$PORT" \
  --max-conns-per-ip 0 --conn-rate-per-ip off --rate-limit off "${backend[@]}" >"$OUT/$LABEL.log" 2>&1 &
gateway=$!
trap 'kill "$gateway" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break
  sleep 0.3
done

"$LOADGEN" --quiet --json chat --rooms 100 --members 2 --rate 1 --payload 100 --duration 20s \
  --grace 3s --url "ws://127.0.0.1:$PORT/ws" >"$OUT/$LABEL.json" &
loadgen=$!
sleep 6 # joins are done, sending is under way
callgrind_control -z "$gateway" >/dev/null 2>&1
start=$(date +%s.%N)
sleep "$WINDOW"
callgrind_control -d "$gateway" >/dev/null 2>&1
end=$(date +%s.%N)
wait "$loadgen"

dump=$(ls "$OUT/$LABEL".*.1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
python3 - "$total" "$start" "$end" "$OUT/$LABEL.json" "$RATE" <<'EOF'
import json, sys
total, start, end, report, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
messages = json.load(open(report))["messages"]
window = end - start
print(json.dumps({
    "instructions": total,
    "window_secs": round(window, 2),
    "instructions_per_message": round(total / (rate * window)),
    "lost": messages["lost"],
    "sent": messages["sent"],
}))
EOF
echo "callgrind profile: $dump (callgrind_annotate --inclusive=yes $dump)" >&2
