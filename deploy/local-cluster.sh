#!/usr/bin/env bash
# A Palaver cluster on this machine, without Docker: a private redis-server,
# three gateway nodes and HAProxy running deploy/haproxy.cfg (the same file
# docker-compose.yml uses). For development, demos and tests.
#
#   deploy/local-cluster.sh                                   # target/debug/palaver
#   PALAVER_BIN=target/release/palaver deploy/local-cluster.sh
#
# Settings (environment):
#   PALAVER_BIN     gateway binary (default target/debug/palaver, built with cargo if missing)
#   LB_PORT         public chat port                    (default 8080)
#   GATEWAY_PORTS   the three gateways' ports           (default "8081 8082 8083")
#   REDIS_PORT      the private Redis port              (default 6390)
#   STATS_PORT      HAProxy stats page and /metrics     (default 8404)
#   CLUSTER_DIR     logs and Redis files                (default a new temp dir)
#   Every other PALAVER_* / OTEL_* / RUST_LOG variable reaches the gateways.
#
# Ctrl-C (or SIGTERM) stops everything: the gateways drain (SIGTERM, clients get
# 1001), then HAProxy and Redis stop. Rolling restart by hand: `kill -TERM` one
# gateway's pid (printed below), then start it again with the printed command.
set -euo pipefail
cd "$(dirname "$0")/.."

LB_PORT=${LB_PORT:-8080}
read -r -a GATEWAY_PORTS <<<"${GATEWAY_PORTS:-8081 8082 8083}"
REDIS_PORT=${REDIS_PORT:-6390}
STATS_PORT=${STATS_PORT:-8404}
CLUSTER_DIR=${CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/palaver-cluster.XXXXXX")}
PALAVER_BIN=${PALAVER_BIN:-target/debug/palaver}

if [ "${#GATEWAY_PORTS[@]}" -ne 3 ]; then
  echo "GATEWAY_PORTS must name three ports" >&2
  exit 2
fi

# Installs a Debian package when a tool is missing (as root), else says how.
need() {
  local tool=$1 package=$2
  command -v "$tool" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing $package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null
  else
    echo "$tool is missing: apt-get install $package" >&2
    exit 1
  fi
}
need redis-server redis-server
need haproxy haproxy
if [ ! -x "$PALAVER_BIN" ]; then
  echo "building $PALAVER_BIN" >&2
  cargo build -p palaver-gateway --bin palaver
fi

mkdir -p "$CLUSTER_DIR"
pids=()
gateway_pids=()

stop() {
  trap - EXIT INT TERM
  echo "stopping the cluster" >&2
  # Gateways first, gracefully (they drain within --shutdown-deadline).
  for pid in "${gateway_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${gateway_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "stopped; logs in $CLUSTER_DIR" >&2
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# HTTP status of GET path on a local port (0: no answer), with bash's
# /dev/tcp so that no curl is needed. A subshell, so the socket closes with it.
http_status() (
  port=$1 path=$2
  { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || { echo 0; exit 0; }
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$path" >&3
  IFS=' ' read -r -t 2 _ status _ <&3 || true
  echo "${status:-0}"
)

# Polls until GET path answers 200 (10 s at most).
wait_for() {
  local what=$1 port=$2 path=$3
  for _ in $(seq 1 200); do
    [ "$(http_status "$port" "$path")" = 200 ] && return 0
    sleep 0.05
  done
  echo "$what on port $port did not become ready; see $CLUSTER_DIR" >&2
  exit 1
}

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
  --dir "$CLUSTER_DIR" >"$CLUSTER_DIR/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 200); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.05
done

gateway_commands=()
for n in 1 2 3; do
  port=${GATEWAY_PORTS[$((n - 1))]}
  command=(env PALAVER_NODE_ID="local-$n" PALAVER_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
    PALAVER_CLIENT_IP_HEADER=X-Forwarded-For "$PALAVER_BIN" --listen "127.0.0.1:$port")
  gateway_commands+=("${command[*]}")
  "${command[@]}" >"$CLUSTER_DIR/gateway-$n.log" 2>&1 &
  gateway_pids+=($!)
done
for n in 1 2 3; do wait_for "gateway-$n" "${GATEWAY_PORTS[$((n - 1))]}" /readyz; done

PALAVER_GATEWAY_1="127.0.0.1:${GATEWAY_PORTS[0]}" \
PALAVER_GATEWAY_2="127.0.0.1:${GATEWAY_PORTS[1]}" \
PALAVER_GATEWAY_3="127.0.0.1:${GATEWAY_PORTS[2]}" \
PALAVER_LB_BIND="127.0.0.1:$LB_PORT" \
PALAVER_LB_STATS_BIND="127.0.0.1:$STATS_PORT" \
PALAVER_LB_CHECK_INTERVAL=${PALAVER_LB_CHECK_INTERVAL:-500ms} \
  haproxy -db -f deploy/haproxy.cfg >"$CLUSTER_DIR/haproxy.log" 2>&1 &
pids+=($!)
wait_for haproxy "$LB_PORT" /healthz

cat <<EOF
palaver cluster up
  chat:      http://127.0.0.1:$LB_PORT   (WebSocket ws://127.0.0.1:$LB_PORT/ws)
  haproxy:   http://127.0.0.1:$STATS_PORT/   (stats; its own metrics at /metrics)
  redis:     redis://127.0.0.1:$REDIS_PORT
  logs:      $CLUSTER_DIR
EOF
for n in 1 2 3; do
  port=${GATEWAY_PORTS[$((n - 1))]}
  echo "  gateway-$n: http://127.0.0.1:$port   metrics /metrics   pid ${gateway_pids[$((n - 1))]}   (${gateway_commands[$((n - 1))]})"
done
echo "Ctrl-C stops everything."

# Stay up until told to stop; say so if a gateway exits on its own.
reported=()
while sleep 1; do
  for n in 0 1 2; do
    if [ -z "${reported[$n]:-}" ] && ! kill -0 "${gateway_pids[$n]}" 2>/dev/null; then
      echo "gateway-$((n + 1)) (pid ${gateway_pids[$n]}) exited; see $CLUSTER_DIR/gateway-$((n + 1)).log" >&2
      reported[$n]=1
    fi
  done
done
