#!/usr/bin/env bash
# Reproduces the benchmark table of docs/benchmarks.md.
#
# Builds release binaries (palaver, palaver-loadgen, the seed's Go hub), then
# runs every step against palaver and the seed side by side, each run on a
# freshly started server:
#   capacity  1 room x 1,000 clients, 10 senders, increasing rates: the highest
#             delivered msgs/s with p99 < 100 ms, 0 loss and the senders on rate
#   cost      server CPU-seconds per million deliveries at 100k and 200k deliveries/s
#   idle      server memory per idle connection at 1,000, 5,000 and 15,000 connections
#   cluster   the capacity sweep on 1 and 3 palaver nodes over one private Redis
#             (skipped with a note if the Redis backend is not available)
#   chat      many small rooms in which every member sends (1,000 rooms x 2): for memory
#             mode (1 gateway), 1 gateway + Redis and 3 gateways + Redis, a sweep of the
#             total offered msgs/s; reports gateway and redis-server CPU µs per message and
#             the knee (highest delivered msgs/s with p99 < 100 ms, 0 loss, senders on rate).
#             `INFO commandstats` of every Redis run is kept in the logs directory.
#             Setup cluster-N: N gateways over a private 3-master Redis Cluster (no
#             replicas); each master's CPU-seconds and script calls from the gateways'
#             start to the run's end go to the results as a {"bench":"chat-shards"}
#             line (the per-shard split); redis-N gets the same line for its one Redis.
#   big-room  one room of 15,000 (BENCH_BIG_CLIENTS), palaver beside the seed:
#             the join storm (time to connect and join all, server CPU per join at
#             1k / 5k / 15k members, RSS per connection afterwards); palaver's RSS per
#             idle connection in rooms of 100 and in one room each; fan-out from
#             1 sender x 10 msgs/s to everyone (p99 < 100 ms, 0 loss); and palaver
#             on 3 gateways over one private Redis with 15,000 members each (p99 <
#             150 ms, 0 loss), driven by 3 loadgen processes (20,000 open files per
#             process), each sender at 10/3 msgs/s so the room gets 10 msgs/s.
# Every report is appended as one JSON line to the results file, and the
# results are printed as markdown tables (palaver-loadgen summarize).
#
# Only loopback traffic; every run is bounded by `timeout`; the sweeps stop at
# the first failing rate. Knobs (environment variables):
#   BENCH_STEPS="capacity cost idle cluster chat big-room"  steps to run
#   BENCH_SERVERS="palaver seed-go"             servers for the capacity and cost steps
#   BENCH_RATES="1 2 5 10 20 30 50 75 100"      msgs/s per sender for sweeps
#   BENCH_COST="100000 200000"                  deliveries/s for the cost step
#   BENCH_IDLE="1000 5000 15000"                connection counts for the idle step
#   BENCH_NODES="1 3"                           node counts for the cluster step
#   BENCH_CHAT_SETUPS="memory redis-1 redis-3"  chat: memory mode, redis-N (N gateways + Redis)
#                                               or cluster-N (N gateways + 3-master Cluster)
#   BENCH_CHAT_RATES="2000 4000 10000 20000 30000"  chat: total offered msgs/s (per client: / clients)
#   BENCH_CHAT_ROOMS=1000 BENCH_CHAT_MEMBERS=2  chat: rooms and members per room (all send)
#   BENCH_CHAT_DURATION=8s BENCH_CHAT_GRACE=4s  chat: sending time and grace per run
#   BENCH_CHAT_KEEP_GOING=1                     chat: run every rate even after one fails
#   BENCH_BIG_CLIENTS=15000 BENCH_BIG_RATE=10      big-room: members (per gateway), room msgs/s
#   BENCH_BIG_GATEWAYS=3                        big-room: gateways of the Redis run (0: skip it)
#   BENCH_BIG_SHAPES="one-room rooms-of-100 own-room"  big-room: idle shapes for palaver
#   BENCH_NICE=-15                              niceness of servers and loadgens (we share
#                                               the machine with compiles; root may go below 0),
#                                               run in a session of its own (setsid) whose
#                                               autogroup gets the same niceness
#   BENCH_CLIENTS=1000 BENCH_SENDERS=10 BENCH_PAYLOAD=100
#   BENCH_DURATION=10s BENCH_GRACE=5s BENCH_MAX_P99=100ms
#   BENCH_RESULTS=target/bench/results-<time>.jsonl
#   BENCH_SKIP_BUILD=1                          use the binaries already built
#   BENCH_PALAVER=target/release/palaver         the palaver binary to run (e.g. a build of another commit)
#   BENCH_SERVER_CPUS=0 BENCH_LOADGEN_CPUS=1    pin servers and the loadgen to CPU lists
#                                               (taskset); unset: no pinning
#   BENCH_REDIS_CPUS=1                          pin redis-server (default: BENCH_LOADGEN_CPUS)
#   BENCH_LOADGEN_ARGS="--workers 1"            extra loadgen options for every run
#   SEED_GO_SRC=<dir of the seed's main.go and build.sh> (default ../shared/peers/seed-go)
#   RUST_LOG=warn                               palaver's log level during runs
#   PALAVER_FLAGS="--max-conns-per-ip 0 --conn-rate-per-ip off --rate-limit off"
#                                               palaver's abuse limits are off: every client
#                                               comes from loopback and senders exceed 20/s,
#                                               and the seed has no such limits
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

STEPS=${BENCH_STEPS:-capacity cost idle cluster chat big-room}
SERVERS=${BENCH_SERVERS:-palaver seed-go}
RATES=${BENCH_RATES:-1 2 5 10 20 30 50 75 100}
COST=${BENCH_COST:-100000 200000}
IDLE=${BENCH_IDLE:-1000 5000 15000}
NODES=${BENCH_NODES:-1 3}
CLIENTS=${BENCH_CLIENTS:-1000}
SENDERS=${BENCH_SENDERS:-10}
PAYLOAD=${BENCH_PAYLOAD:-100}
DURATION=${BENCH_DURATION:-10s}
GRACE=${BENCH_GRACE:-5s}
MAX_P99=${BENCH_MAX_P99:-100ms}
CHAT_SETUPS=${BENCH_CHAT_SETUPS:-memory redis-1 redis-3}
CHAT_RATES=${BENCH_CHAT_RATES:-2000 4000 10000 20000 30000}
CHAT_ROOMS=${BENCH_CHAT_ROOMS:-1000}
CHAT_MEMBERS=${BENCH_CHAT_MEMBERS:-2}
CHAT_DURATION=${BENCH_CHAT_DURATION:-8s}
CHAT_GRACE=${BENCH_CHAT_GRACE:-4s}
CHAT_KEEP_GOING=${BENCH_CHAT_KEEP_GOING:-}
BIG_CLIENTS=${BENCH_BIG_CLIENTS:-15000}
BIG_RATE=${BENCH_BIG_RATE:-10}
BIG_GATEWAYS=${BENCH_BIG_GATEWAYS:-3}
BIG_SHAPES=${BENCH_BIG_SHAPES:-one-room rooms-of-100 own-room}
NICE=${BENCH_NICE:-}
# With autogroup scheduling, nice only ranks processes within one session: the run gets a
# session of its own and that session's autogroup the same niceness (docs/benchmarks.md).
if [ -n "$NICE" ] && [ -z "${BENCH_OWN_SESSION:-}" ] && command -v setsid >/dev/null; then
  BENCH_OWN_SESSION=1 exec setsid -w "$repo/scripts/$(basename "$0")" "$@"
fi
if [ -n "$NICE" ] && [ -w /proc/self/autogroup ]; then echo "$NICE" >/proc/self/autogroup; fi
RESULTS=${BENCH_RESULTS:-target/bench/results-$(date +%Y%m%d-%H%M%S).jsonl}
SEED_SRC=${SEED_GO_SRC:-$repo/../shared/peers/seed-go}
export RUST_LOG=${RUST_LOG:-warn}
PALAVER_FLAGS=${PALAVER_FLAGS:---max-conns-per-ip 0 --conn-rate-per-ip off --rate-limit off}

SERVER_CPUS=${BENCH_SERVER_CPUS:-}
LOADGEN_CPUS=${BENCH_LOADGEN_CPUS:-}
REDIS_CPUS=${BENCH_REDIS_CPUS:-$LOADGEN_CPUS}
LOADGEN_ARGS=${BENCH_LOADGEN_ARGS:-}
# Command prefixes that pin to a CPU list; taskset execs, so $! stays the server's pid.
SERVER_PIN=()
LOADGEN_PIN=()
REDIS_PIN=()
[ -n "$SERVER_CPUS" ] && SERVER_PIN=(taskset -c "$SERVER_CPUS")
[ -n "$LOADGEN_CPUS" ] && LOADGEN_PIN=(taskset -c "$LOADGEN_CPUS")
[ -n "$REDIS_CPUS" ] && REDIS_PIN=(taskset -c "$REDIS_CPUS")
# nice execs too; it goes first so the pinning applies to the process it starts.
if [ -n "$NICE" ]; then
  SERVER_PIN=(nice -n "$NICE" "${SERVER_PIN[@]}")
  LOADGEN_PIN=(nice -n "$NICE" "${LOADGEN_PIN[@]}")
  REDIS_PIN=(nice -n "$NICE" "${REDIS_PIN[@]}")
fi

PALAVER=${BENCH_PALAVER:-$repo/target/release/palaver}
LOADGEN=$repo/target/release/palaver-loadgen
SEED=$repo/target/seed-go
LOGS=$(dirname "$RESULTS")/logs
# Longest a single loadgen run may take: setup, duration, grace, teardown.
RUN_LIMIT=${BENCH_RUN_LIMIT:-240}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# --- processes --------------------------------------------------------------

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop PID: SIGTERM, then SIGKILL after 15 s (palaver drains for up to 10 s).
stop() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  local kept=()
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# A TCP port on 127.0.0.1 nobody listens on.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 10000))
    ss -Htln "sport = :$port" | grep -q . || { echo "$port"; return; }
  done
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (10 s at most).
wait_port() {
  local i
  for i in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# start_palaver NAME [ARGS...]: sets SERVER_PID and SERVER_URL.
start_palaver() {
  local name=$1; shift
  local out=$LOGS/$name.out i addr
  # shellcheck disable=SC2086 # PALAVER_FLAGS is a list of flags
  "${SERVER_PIN[@]}" "$PALAVER" --listen 127.0.0.1:0 $PALAVER_FLAGS "$@" >"$out" 2>"$LOGS/$name.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for i in $(seq 100); do
    # The line palaver prints when ready: "palaver listening on http://ADDR node=ID".
    addr=$(sed -n 's/^palaver listening on http:\/\/\([^ ]*\) .*/\1/p' "$out")
    if [ -n "$addr" ]; then
      SERVER_URL=ws://$addr/ws
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  log "palaver ($name) did not start: $(tail -n 3 "$LOGS/$name.err" | tr '\n' ' ')"
  stop "$SERVER_PID"
  return 1
}

# start_nodes NAME N [palaver args...]: N fresh palaver nodes n1..nN, each with
# those args and `--node-id nI`. Fills node_pids, urls (--url ...) and pids
# (--server-pid ...), the caller's locals; on a failure stops the nodes it
# started and returns 1 (the caller stops its Redis).
start_nodes() {
  local name=$1 count=$2 i pid
  shift 2
  urls=() pids=() node_pids=()
  for i in $(seq "$count"); do
    if ! start_palaver "$name-n$i" "$@" --node-id "n$i"; then
      for pid in "${node_pids[@]}"; do stop "$pid"; done
      return 1
    fi
    node_pids+=("$SERVER_PID")
    urls+=(--url "$SERVER_URL")
    pids+=(--server-pid "$SERVER_PID")
  done
}

# start_seed NAME: sets SERVER_PID and SERVER_URL.
start_seed() {
  local port
  port=$(free_port)
  "${SERVER_PIN[@]}" "$SEED" -addr "127.0.0.1:$port" >"$LOGS/$1.out" 2>"$LOGS/$1.err" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  SERVER_URL=ws://127.0.0.1:$port/ws
  wait_port "$port" || { log "seed-go did not start"; stop "$SERVER_PID"; return 1; }
}

# start_server palaver|seed-go NAME: a fresh server of that kind.
start_server() {
  case $1 in
    palaver) start_palaver "$2" ;;
    seed-go) start_seed "$2" ;;
  esac
}

protocol_of() { [ "$1" = seed-go ] && echo raw || echo palaver; }

# loadgen ARGS...: one bounded run; its JSON report goes to the results file.
# Returns the loadgen's status (0 ok, 3 a check failed, other: error).
loadgen() {
  local out status
  # shellcheck disable=SC2086 # LOADGEN_ARGS is a list of options
  out=$(timeout --kill-after=10 "$RUN_LIMIT" "${LOADGEN_PIN[@]}" "$LOADGEN" --quiet --json \
    $LOADGEN_ARGS "$@" 2>>"$LOGS/loadgen.err")
  status=$?
  if [ "${out:0:1}" = "{" ]; then
    printf '%s\n' "$out" >>"$RESULTS"
  else
    log "loadgen produced no report (status $status): $(tail -n 2 "$LOGS/loadgen.err" | tr '\n' ' ')"
  fi
  return $status
}

# fanout_args RATE: the fanout options every sweep shares.
fanout_args() {
  echo fanout --clients "$CLIENTS" --rooms 1 --senders "$SENDERS" --rate "$1" \
    --payload "$PAYLOAD" --duration "$DURATION" --grace "$GRACE"
}

# --- steps ------------------------------------------------------------------

# The sweep against one freshly started server per rate; stops at the first failure.
step_capacity() {
  local kind rate status
  for kind in $SERVERS; do
    for rate in $RATES; do
      start_server "$kind" "capacity-$kind-$rate" || return 1
      log "capacity: $kind, $SENDERS senders x $rate msgs/s"
      # shellcheck disable=SC2046
      loadgen $(fanout_args "$rate") --protocol "$(protocol_of "$kind")" --url "$SERVER_URL" \
        --server-pid "$SERVER_PID" --max-p99 "$MAX_P99" --max-loss-ratio 0 --min-send-ratio 0.95 \
        --tag bench=capacity --tag server="$kind"
      status=$?
      stop "$SERVER_PID"
      if [ "$status" -ne 0 ]; then
        log "capacity: $kind stops at $rate msgs/s per sender (status $status)"
        break
      fi
    done
  done
}

step_cost() {
  local kind target rate
  for kind in $SERVERS; do
    for target in $COST; do
      # deliveries/s = senders x rate x clients (one room, everyone receives).
      rate=$(awk -v t="$target" -v s="$SENDERS" -v c="$CLIENTS" 'BEGIN { printf "%g", t / (s * c) }')
      start_server "$kind" "cost-$kind-$target" || return 1
      log "cost: $kind at $target deliveries/s ($rate msgs/s per sender)"
      # shellcheck disable=SC2046
      loadgen $(fanout_args "$rate") --protocol "$(protocol_of "$kind")" --url "$SERVER_URL" \
        --server-pid "$SERVER_PID" --tag bench=cost --tag server="$kind" --tag deliveries="$target"
      stop "$SERVER_PID"
    done
  done
}

step_idle() {
  local kind n
  for n in $IDLE; do
    for kind in palaver seed-go; do
      start_server "$kind" "idle-$kind-$n" || return 1
      log "idle: $kind with $n connections"
      loadgen idle --clients "$n" --protocol "$(protocol_of "$kind")" --url "$SERVER_URL" \
        --server-pid "$SERVER_PID" --tag bench=idle --tag server="$kind"
      stop "$SERVER_PID"
    done
  done
}

# Starts a private redis-server; sets REDIS_PID, REDIS_PORT and REDIS_URL.
start_redis() {
  local port dir
  command -v redis-server >/dev/null || { log "redis-server is not installed (apt-get install redis-server)"; return 1; }
  port=$(free_port)
  dir=$(mktemp -d)
  "${REDIS_PIN[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    >"$LOGS/redis-$port.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  REDIS_PORT=$port
  REDIS_URL=redis://127.0.0.1:$port
  REDIS_DIR=$dir
  wait_port "$port" || { log "redis-server did not start"; stop "$REDIS_PID"; return 1; }
}

# Starts a private 3-master Redis Cluster (no replicas); sets CLUSTER_PIDS,
# CLUSTER_PORTS, CLUSTER_SEEDS and CLUSTER_DIR.
start_redis_cluster() {
  local port i nodes=()
  command -v redis-cli >/dev/null || { log "redis-cli is not installed (apt-get install redis-tools)"; return 1; }
  CLUSTER_PIDS=() CLUSTER_PORTS=() CLUSTER_DIR=$(mktemp -d)
  for i in 1 2 3; do
    port=$(free_port)
    mkdir -p "$CLUSTER_DIR/$port"
    "${REDIS_PIN[@]}" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --dir "$CLUSTER_DIR/$port" \
      >"$LOGS/redis-cluster-$port.log" 2>&1 &
    CLUSTER_PIDS+=("$!")
    PIDS+=("$!")
    CLUSTER_PORTS+=("$port")
    nodes+=("127.0.0.1:$port")
    wait_port "$port" || { log "redis-server (cluster) did not start"; return 1; }
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$LOGS/redis-cluster-create.log" 2>&1 \
    || { log "redis-cli --cluster create failed"; return 1; }
  for i in $(seq 100); do
    redis-cli -p "${CLUSTER_PORTS[0]}" CLUSTER INFO | grep -q cluster_state:ok && break
    sleep 0.1
  done
  CLUSTER_SEEDS=$(printf 'redis://%s,' "${nodes[@]}")
  CLUSTER_SEEDS=${CLUSTER_SEEDS%,}
}

stop_redis_cluster() {
  local pid
  for pid in "${CLUSTER_PIDS[@]}"; do stop "$pid"; done
  rm -rf "$CLUSTER_DIR"
}

# CPU ticks (user + system) of a process so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Script calls (EVALSHA + EVAL) a Redis on PORT ran since it started.
script_calls() {
  redis-cli -p "$1" INFO commandstats | tr -d '\r' \
    | awk -F'[:=,]' '/^cmdstat_(evalsha|eval):/ { n += $3 } END { print n + 0 }'
}

# shard_report SETUP RATE TICKS...: one results line with each master's CPU and calls.
shard_report() {
  local setup=$1 rate=$2 hz i port cpu calls shards=() before
  shift 2
  before=("$@")
  hz=$(getconf CLK_TCK)
  for i in "${!CLUSTER_PORTS[@]}"; do
    port=${CLUSTER_PORTS[$i]}
    cpu=$(awk -v a="${before[$i]:-0}" -v b="$(cpu_ticks "${CLUSTER_PIDS[$i]}")" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')
    calls=$(script_calls "$port")
    redis-cli -p "$port" INFO commandstats >"$LOGS/chat-$setup-$rate-$port.commandstats" 2>&1
    shards+=("{\"port\":$port,\"cpu_s\":$cpu,\"script_calls\":$calls}")
    log "chat: $setup at $rate msgs/s, shard $port: $cpu CPU-s, $calls script calls"
  done
  printf '{"bench":"chat-shards","setup":"%s","rate":%s,"shards":[%s]}\n' "$setup" "$rate" \
    "$(IFS=,; echo "${shards[*]}")" >>"$RESULTS"
}

step_cluster() {
  local nodes rate i status urls pids node_pids
  for nodes in $NODES; do
    for rate in $RATES; do
      start_redis || return 1
      if ! start_nodes "cluster-$nodes-$rate" "$nodes" --redis-url "$REDIS_URL"; then
        log "cluster: palaver cannot run with --redis-url (backend not wired yet?); skipping the step"
        stop "$REDIS_PID"
        return 1
      fi
      log "cluster: $nodes nodes, $SENDERS senders x $rate msgs/s"
      # shellcheck disable=SC2046
      loadgen $(fanout_args "$rate") --protocol palaver "${urls[@]}" "${pids[@]}" \
        --max-p99 "$MAX_P99" --max-loss-ratio 0 --min-send-ratio 0.95 \
        --tag bench=cluster --tag server=palaver --tag nodes="$nodes"
      status=$?
      for pid in "${node_pids[@]}"; do stop "$pid"; done
      stop "$REDIS_PID"
      rm -rf "$REDIS_DIR"
      if [ "$status" -ne 0 ]; then
        log "cluster: $nodes nodes stop at $rate msgs/s per sender (status $status)"
        break
      fi
    done
  done
}

# Many small rooms, every member sending: a sweep of total msgs/s per setup
# (memory: one gateway, no Redis; redis-N: N gateways over one private Redis).
step_chat() {
  local setup nodes rate per_client i status urls pids node_pids redis_args clients backend ticks pid
  clients=$((CHAT_ROOMS * CHAT_MEMBERS))
  for setup in $CHAT_SETUPS; do
    case $setup in
      memory) nodes=1 ;;
      redis-[0-9]*) nodes=${setup#redis-} ;;
      cluster-[0-9]*) nodes=${setup#cluster-} ;;
      *) log "chat: unknown setup $setup (memory, redis-N, cluster-N)"; continue ;;
    esac
    for rate in $CHAT_RATES; do
      per_client=$(awk -v t="$rate" -v c="$clients" 'BEGIN { printf "%g", t / c }')
      redis_args=() backend=()
      case $setup in
        redis-*)
          start_redis || return 1
          redis_args=(--redis-pid "$REDIS_PID")
          backend=(--redis-url "$REDIS_URL") ;;
        cluster-*)
          start_redis_cluster || return 1
          backend=(--redis-cluster "$CLUSTER_SEEDS") ;;
      esac
      if ! start_nodes "chat-$setup-$rate" "$nodes" "${backend[@]}"; then
        case $setup in
          redis-*) stop "$REDIS_PID" ;;
          cluster-*) stop_redis_cluster ;;
        esac
        return 1
      fi
      ticks=()
      case $setup in
        redis-*) CLUSTER_PIDS=("$REDIS_PID") CLUSTER_PORTS=("$REDIS_PORT"); ticks+=("$(cpu_ticks "$REDIS_PID")") ;;
        cluster-*) for pid in "${CLUSTER_PIDS[@]}"; do ticks+=("$(cpu_ticks "$pid")"); done ;;
      esac
      log "chat: $setup, $CHAT_ROOMS rooms x $CHAT_MEMBERS members, $rate msgs/s ($per_client per client)"
      loadgen chat --rooms "$CHAT_ROOMS" --members "$CHAT_MEMBERS" --rate "$per_client" \
        --payload "$PAYLOAD" --duration "$CHAT_DURATION" --grace "$CHAT_GRACE" \
        "${urls[@]}" "${pids[@]}" "${redis_args[@]}" \
        --max-p99 "$MAX_P99" --max-loss-ratio 0 --min-send-ratio 0.95 \
        --tag bench=chat --tag setup="$setup" --tag rate="$rate"
      status=$?
      case $setup in
        redis-*|cluster-*) shard_report "$setup" "$rate" "${ticks[@]}" ;;
      esac
      for pid in "${node_pids[@]}"; do stop "$pid"; done
      case $setup in
        redis-*) stop "$REDIS_PID"; rm -rf "$REDIS_DIR" ;;
        cluster-*) stop_redis_cluster ;;
      esac
      if [ "$status" -ne 0 ]; then
        log "chat: $setup fails at $rate msgs/s (status $status)"
        [ -n "$CHAT_KEEP_GOING" ] || break
      fi
    done
  done
}

# One room of BIG_CLIENTS members, palaver beside the seed (see the header).
step_big_room() {
  local kind shape rooms i status urls pids node_pids per_sender lg_pids
  for kind in palaver seed-go; do
    for shape in $BIG_SHAPES; do
      case $shape in
        one-room) rooms=1 ;;
        rooms-of-100) rooms=0 ;;
        own-room) rooms=$BIG_CLIENTS ;;
        *) log "big-room: unknown shape $shape"; continue ;;
      esac
      # The seed has one room only.
      [ "$kind" = seed-go ] && [ "$shape" != one-room ] && continue
      start_server "$kind" "big-idle-$kind-$shape" || return 1
      log "big-room: $kind, $BIG_CLIENTS idle clients, $shape"
      loadgen idle --clients "$BIG_CLIENTS" --rooms "$rooms" --protocol "$(protocol_of "$kind")" \
        --url "$SERVER_URL" --server-pid "$SERVER_PID" \
        --tag bench=big-room --tag server="$kind" --tag shape="$shape"
      stop "$SERVER_PID"
    done
  done
  for kind in palaver seed-go; do
    start_server "$kind" "big-fanout-$kind" || return 1
    log "big-room: $kind, fan-out to $BIG_CLIENTS members, 1 sender x $BIG_RATE msgs/s"
    loadgen fanout --clients "$BIG_CLIENTS" --rooms 1 --senders 1 --rate "$BIG_RATE" \
      --payload "$PAYLOAD" --duration "$DURATION" --grace "$GRACE" \
      --protocol "$(protocol_of "$kind")" --url "$SERVER_URL" --server-pid "$SERVER_PID" \
      --max-p99 100ms --max-loss-ratio 0 --min-send-ratio 0.95 \
      --tag bench=big-room --tag server="$kind" --tag shape=fanout
    stop "$SERVER_PID"
  done
  [ "$BIG_GATEWAYS" -gt 1 ] || return 0
  start_redis || return 1
  start_nodes big-cluster "$BIG_GATEWAYS" --redis-url "$REDIS_URL" || { stop "$REDIS_PID"; return 1; }
  # One loadgen process per gateway's worth of members (open files), each
  # spreading its members over every gateway with its own sender.
  per_sender=$(awk -v r="$BIG_RATE" -v g="$BIG_GATEWAYS" 'BEGIN { printf "%g", r / g }')
  log "big-room: $BIG_GATEWAYS gateways, $((BIG_CLIENTS * BIG_GATEWAYS)) members, $BIG_GATEWAYS senders x $per_sender msgs/s"
  lg_pids=()
  for i in $(seq "$BIG_GATEWAYS"); do
    loadgen fanout --clients "$BIG_CLIENTS" --rooms 1 --senders 1 --rate "$per_sender" \
      --payload "$PAYLOAD" --duration "$DURATION" --grace "$GRACE" \
      --protocol palaver "${urls[@]}" "${pids[@]}" \
      --max-p99 150ms --max-loss-ratio 0 --min-send-ratio 0.95 \
      --tag bench=big-room --tag server=palaver --tag shape="fanout-$BIG_GATEWAYS-gateways" \
      --tag part="$i" &
    lg_pids+=($!)
  done
  status=0
  for pid in "${lg_pids[@]}"; do wait "$pid" || status=$?; done
  [ "$status" -eq 0 ] || log "big-room: the $BIG_GATEWAYS-gateway run failed a check (status $status)"
  for pid in "${node_pids[@]}"; do stop "$pid"; done
  stop "$REDIS_PID"
  rm -rf "$REDIS_DIR"
}

# --- main -------------------------------------------------------------------

mkdir -p "$(dirname "$RESULTS")" "$LOGS"
# Clients and servers inherit this: 15,000 idle connections need the fds.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The seed is needed only by steps that run it (capacity and cost with seed-go, idle).
NEED_SEED=
for step in $STEPS; do
  case $step in
    idle|big-room) NEED_SEED=1 ;;
    capacity|cost) case " $SERVERS " in *" seed-go "*) NEED_SEED=1 ;; esac ;;
  esac
done

if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
  log "building release binaries"
  cargo build --release -p palaver-gateway -p palaver-loadgen || die "cargo build failed"
  if [ -n "$NEED_SEED" ] && { [ ! -x "$SEED" ] || [ "$SEED_SRC/main.go" -nt "$SEED" ]; }; then
    [ -f "$SEED_SRC/build.sh" ] || die "seed-go sources not found in $SEED_SRC (set SEED_GO_SRC)"
    bash "$SEED_SRC/build.sh" "$SEED" || die "seed-go build failed"
  fi
fi
for bin in "$PALAVER" "$LOADGEN" ${NEED_SEED:+"$SEED"}; do
  [ -x "$bin" ] || die "missing $bin (build it, or unset BENCH_SKIP_BUILD)"
done

{
  echo "Benchmark run $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "Machine: $(nproc) CPUs ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
  echo "palaver flags: $PALAVER_FLAGS; server CPUs: ${SERVER_CPUS:-any}; loadgen CPUs: ${LOADGEN_CPUS:-any} $LOADGEN_ARGS"
  echo "Load: $CLIENTS clients, $SENDERS senders, $PAYLOAD B messages, $DURATION per run (+$GRACE grace); pass = p99 < $MAX_P99, no loss, senders >= 95% of their rate"
  echo "Big room: $BIG_CLIENTS members per gateway, $BIG_RATE msgs/s into the room, $BIG_GATEWAYS gateways over Redis; niceness: ${NICE:-not set}"
  echo "Chat: $CHAT_ROOMS rooms x $CHAT_MEMBERS members, all sending, $CHAT_DURATION per run (+$CHAT_GRACE grace); redis-server CPUs: ${REDIS_CPUS:-any}"
} | tee "${RESULTS%.jsonl}.md" >&2
log "results: $RESULTS"

for step in $STEPS; do
  case $step in
    capacity|cost|idle|cluster|chat|big-room)
      log "step: $step"
      "step_${step//-/_}" || log "step $step did not complete; continuing"
      ;;
    *) log "unknown step $step (known: capacity cost idle cluster chat big-room)" ;;
  esac
done

if [ -s "$RESULTS" ]; then
  echo >>"${RESULTS%.jsonl}.md"
  "$LOADGEN" summarize "$RESULTS" | tee -a "${RESULTS%.jsonl}.md"
  log "tables also written to ${RESULTS%.jsonl}.md"
else
  log "no results recorded"
  exit 1
fi
