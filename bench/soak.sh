#!/usr/bin/env bash
# Soak and chaos run: paid load at a fixed rate through two gateway replicas that share a Redis and
# the PostgreSQL ledger, in front of a stub upstream and the stub facilitator, while Redis and
# PostgreSQL are each killed (kill -9) and restarted, and so is one replica. Afterwards it checks
# the money, not the availability: no delivery without a settlement (or a recorded unknown
# outcome), no payment delivered twice (replays of delivered payments are sent during the run), no
# receipt missing from the ledger, and memory and descriptors flat after warm-up. It prints a table
# per 10 s and ok/FAIL per check, and exits non-zero when a check fails.
#
#   bash bench/soak.sh                        # 30 minutes
#   SOAK_DURATION=60s bash bench/soak.sh      # the one-minute run tests/run.sh makes
#
# Everything runs on loopback, on ports of its own, with a redis-server and a PostgreSQL cluster
# of its own (never the machine's): Debian's redis-server and postgresql packages, Node.js with
# the npm packages of tests/ (`npm ci --prefix tests`).
#
# Environment:
#   SOAK_DURATION      length of the load: 90 (s), 60s, 10m, 1h (default 30m)
#   SOAK_RATE          paid requests per second, alternating between the replicas (default 30)
#   SOAK_CYCLES        chaos cycles (Redis, then PostgreSQL, then replica b) spread over the run
#                      (default: one per 5 minutes, at least one)
#   SOAK_DOWN          seconds each killed part stays down (default: a twelfth of a cycle, 3 to 10)
#   SOAK_WARMUP        seconds before the first kill, left out of the memory comparison
#                      (default: a tenth of the run, 10 to 60)
#   SOAK_REPLAY_EVERY  seconds between two replays of delivered payments (default 5)
#   SOAK_UPSTREAM_MS   how long the upstream takes to answer (default 200): payments are then
#                      always in flight between verification and settlement when a part is killed
#   SOAK_DIR           work files, logs, report.md and soak.svg (default $CARGO_TARGET_DIR/soak,
#                      target/soak)
#   SOAK_BUILD         debug or release, when the binaries are built here (default debug)
#   GATEWAY_BIN, BENCH_PAYMENTS_BIN
#                      binaries to use instead of building them (tests/run.sh passes its own)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

seconds_of() { # 90 | 90s | 10m | 1h → seconds
  case "$1" in
    *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;;
  esac
}
DURATION=$(seconds_of "${SOAK_DURATION:-30m}")
[[ "$DURATION" =~ ^[0-9]+$ ]] && [ "$DURATION" -ge 30 ] ||
  { echo "SOAK_DURATION must be a duration of at least 30s (90, 60s, 10m, 1h)" >&2; exit 2; }
RATE=${SOAK_RATE:-30}
CYCLES=${SOAK_CYCLES:-$((DURATION / 300 > 0 ? DURATION / 300 : 1))}
WARMUP=${SOAK_WARMUP:-$((DURATION / 10 < 10 ? 10 : (DURATION / 10 > 60 ? 60 : DURATION / 10)))}
# The last stretch of the run has no kill in it: the parts are back and the load flows again.
TAIL=$WARMUP
CYCLE=$(((DURATION - WARMUP - TAIL) / CYCLES))
DOWN=${SOAK_DOWN:-$((CYCLE / 12 < 3 ? 3 : (CYCLE / 12 > 10 ? 10 : CYCLE / 12)))}
REPLAY_EVERY=${SOAK_REPLAY_EVERY:-5}
UPSTREAM_MS=${SOAK_UPSTREAM_MS:-200}
BUILD=${SOAK_BUILD:-debug}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DIR=${SOAK_DIR:-$TARGET_DIR/soak}
[ "$CYCLE" -ge $((3 * DOWN + 6)) ] || { echo "cycles of ${CYCLE}s are too short for ${DOWN}s outages: fewer SOAK_CYCLES or a longer run" >&2; exit 2; }

COMMAND=""
for v in SOAK_DURATION SOAK_RATE SOAK_CYCLES SOAK_DOWN SOAK_WARMUP SOAK_REPLAY_EVERY SOAK_UPSTREAM_MS SOAK_BUILD; do
  if [ -n "${!v+x}" ]; then COMMAND+="$v=$(printf '%q' "${!v}") "; fi
done
COMMAND+="bash bench/soak.sh"

log() { printf '== soak [%4ss] %s\n' "$SECONDS" "$*" >&2; }
now_ms() { date +%s%3N; }

# ---- tools and binaries --------------------------------------------------------------------------
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
for tool in redis-server redis-cli psql node; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is missing (apt-get install redis-server postgresql nodejs)" >&2; exit 1; }
done
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || { echo "soak: initdb and pg_ctl not found under /usr/lib/postgresql" >&2; exit 1; }
[ -d tests/node_modules/viem ] || { log "npm packages (tests/package-lock.json)"; npm ci --prefix tests --no-audit --no-fund --loglevel=error; }
if [ -z "${GATEWAY_BIN:-}" ] || [ -z "${BENCH_PAYMENTS_BIN:-}" ]; then
  log "build ($BUILD)"
  if [ "$BUILD" = release ]; then
    cargo build --release --locked --bin x402-gateway --example bench_payments
  else
    cargo build --locked --bin x402-gateway --example bench_payments
  fi
  GATEWAY_BIN=${GATEWAY_BIN:-$TARGET_DIR/$BUILD/x402-gateway}
  BENCH_PAYMENTS_BIN=${BENCH_PAYMENTS_BIN:-$TARGET_DIR/$BUILD/examples/bench_payments}
fi
# PostgreSQL refuses to run as root: its server runs as the `postgres` user then.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

rm -rf "$DIR"
mkdir -p "$DIR/logs" "$DIR/pids"
DIR=$(cd "$DIR" && pwd)
PG_DIR=$(mktemp -d /tmp/x402-soak-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
EVENTS=$DIR/events.jsonl
: >"$EVENTS"
event() { printf '{"t":%s,"part":"%s","event":"%s"}\n' "$(now_ms)" "$1" "$2" >>"$EVENTS"; log "$1 $2"; }

# ---- processes -----------------------------------------------------------------------------------
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
trap cleanup EXIT
forget() { # PID: no longer ours to stop
  local kept=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# Ports below the kernel's ephemeral range (never handed out to outgoing connections), picked at
# random and checked free by binding them, so that runs side by side do not collide.
LOW_EPHEMERAL=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
free_ports() { # N → N distinct free ports
  node -e '
    const net = require("node:net");
    const [n, hi] = [Number(process.argv[1]), Number(process.argv[2])];
    const taken = new Set();
    const tryPort = (p) => new Promise((ok) => {
      const s = net.createServer().once("error", () => ok(false));
      s.listen(p, "127.0.0.1", () => s.close(() => ok(true)));
    });
    (async () => {
      while (taken.size < n) {
        const p = 20000 + Math.floor(Math.random() * (hi - 20000));
        if (!taken.has(p) && (await tryPort(p))) taken.add(p);
      }
      console.log([...taken].join(" "));
    })();' "$1" "$LOW_EPHEMERAL"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_until() { # SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds, at most SECONDS
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -lt $deadline ] || { echo "soak: $what did not happen within the bound" >&2; exit 1; }
    sleep 0.05
  done
}
alive() { kill -0 "$1" 2>/dev/null; }
port_open_while_alive() { # PORT PID LOG
  if ! alive "$2"; then
    local status=0
    wait "$2" 2>/dev/null || status=$?
    echo "soak: process $2 (for port $1) exited with status $status; the end of $3:" >&2
    tail -n 20 "$3" >&2
    exit 1
  fi
  port_open "$1"
}

# start_stub NAME KIND [ARGS...]: a soak stub on a port of the kernel's choosing; sets $STUB_PORT
start_stub() { # NAME KIND [ARGS...]
  node bench/soak_stubs.mjs "$2" --port 0 --log "$DIR/$1.jsonl" "${@:3}" >"$DIR/logs/$1.out" 2>"$DIR/logs/$1.err" &
  local pid=$!
  PIDS+=("$pid")
  wait_until 30 "$1 ready" grep -q '"ready":true' "$DIR/logs/$1.out"
  STUB_PORT=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$DIR/logs/$1.out")
}

read -r REDIS_PORT PG_PORT PORT_A PORT_B ADMIN_A ADMIN_B < <(free_ports 6)
REDIS_PID=""
redis_answers() { [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
start_redis() { # without persistence: a killed Redis comes back empty, the harder case
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$DIR" >>"$DIR/logs/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=("$REDIS_PID")
  wait_until 20 "redis-server answering" redis_answers
}

start_pg() {
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -w -t 60 -l "$PG_DIR/server.log" \
    -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >>"$DIR/logs/pg_ctl.log" 2>&1 ||
    { cat "$PG_DIR/server.log" >&2; exit 1; }
}
pg_pids() { # the postmaster and its children
  local main
  main=$(head -n 1 "$PG_DIR/data/postmaster.pid" 2>/dev/null) || return 0
  echo "$main"
  pgrep -P "$main" || true
}
# Gone: no such process, or a zombie its new parent has not reaped yet (where PID 1 reaps none).
gone() { [ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" = Z ]; }
none_alive() { local p; for p in "$@"; do gone "$p" || return 1; done; return 0; }
PSQL=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres)

declare -A REPLICA_PID REPLICA_PORT
REPLICA_PORT[a]=$PORT_A REPLICA_PORT[b]=$PORT_B
start_replica() { # a | b
  "$GATEWAY_BIN" run --config "$DIR/replica-$1.toml" >>"$DIR/logs/replica-$1.log" 2>&1 &
  REPLICA_PID[$1]=$!
  PIDS+=("${REPLICA_PID[$1]}")
  echo "${REPLICA_PID[$1]}" >"$DIR/pids/$1.pid"
  wait_until 60 "replica $1 listening" port_open_while_alive "${REPLICA_PORT[$1]}" "${REPLICA_PID[$1]}" "$DIR/logs/replica-$1.log"
}

log "duration ${DURATION}s at $RATE paid requests/s, upstream answering in ${UPSTREAM_MS} ms; warm-up ${WARMUP}s; $CYCLES chaos cycle(s) of ${CYCLE}s, ${DOWN}s down each; work files in $DIR"
start_stub upstream upstream --delay-ms "$UPSTREAM_MS"
UPSTREAM_PORT=$STUB_PORT
start_stub facilitator facilitator
FACILITATOR_PORT=$STUB_PORT
start_redis
as_pg "$PG_BIN/initdb" -A trust -U postgres --no-sync -D "$PG_DIR/data" >"$DIR/logs/initdb.log" 2>&1
start_pg
"${PSQL[@]}" -c "CREATE DATABASE soak" >/dev/null

KEY_PREFIX="x402-soak-$$-$(date +%s):"
for r in a b; do
  admin=$ADMIN_A
  [ "$r" = b ] && admin=$ADMIN_B
  cat >"$DIR/replica-$r.toml" <<TOML
# Replica $r of the soak run (bench/soak.sh); the stub facilitator moves no money.
unmatched = "deny"

[server]
listen = "127.0.0.1:${REPLICA_PORT[$r]}"
threads = 2
grace_period = "2s"

[admin]
listen = "127.0.0.1:$admin"

[upstream]
url = "http://127.0.0.1:$UPSTREAM_PORT"

[facilitator]
kind = "x402"
url = "http://127.0.0.1:$FACILITATOR_PORT"

[redis]
url = "redis://127.0.0.1:$REDIS_PORT"
key_prefix = "$KEY_PREFIX"

[journal]
url = "postgres://postgres@127.0.0.1:$PG_PORT/soak"
path = "spool-$r.jsonl"
reconcile_interval = "5s"

[defaults]
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
network = "eip155:84532"
asset = "USDC"
# Every payment is signed before the run: valid through it, and a while after.
max_timeout_seconds = $((DURATION + 900))

[[routes]]
match = "GET /paid"
price = "\$0.01"
description = "soak data"
TOML
done
start_replica a
start_replica b

# One fresh payment per request (and a margin), signed before the load starts.
COUNT=$((RATE * DURATION + RATE * 5 + 100))
log "signing $COUNT payments"
"$BENCH_PAYMENTS_BIN" "http://127.0.0.1:$PORT_A/paid" "$COUNT" "$DIR/payments.txt" 2>"$DIR/logs/payments.log"

# ---- load and chaos --------------------------------------------------------------------------------
node bench/soak_load.mjs --replicas "http://127.0.0.1:$PORT_A,http://127.0.0.1:$PORT_B" \
  --payments "$DIR/payments.txt" --rate "$RATE" --duration "$DURATION" --out "$DIR" \
  --pids "$DIR/pids" --events "$EVENTS" --replay-every "$REPLAY_EVERY" >"$DIR/logs/load.out" 2>"$DIR/logs/load.err" &
LOAD_PID=$!
PIDS+=("$LOAD_PID")
wait_until 30 "the load starting" grep -q '"ready":true' "$DIR/logs/load.out"
START_MS=$(sed -n 's/.*"start":\([0-9]*\).*/\1/p' "$DIR/logs/load.out" | head -n 1)

at() { # SECONDS after the load started (a schedule, not a readiness wait)
  local wait_ms=$((START_MS + $1 * 1000 - $(now_ms)))
  if [ "$wait_ms" -gt 0 ]; then sleep "$((wait_ms / 1000)).$(printf '%03d' $((wait_ms % 1000)))"; fi
}

kill_redis() {
  event redis down
  kill -9 "$REDIS_PID"
  wait "$REDIS_PID" 2>/dev/null || true
  forget "$REDIS_PID"
}
kill_pg() {
  local pids
  pids=$(pg_pids)
  event postgres down
  # The whole server at once, as when its machine or container dies.
  # shellcheck disable=SC2086
  kill -9 $pids
  # shellcheck disable=SC2086
  wait_until 20 "PostgreSQL's processes gone" none_alive $pids
}
kill_replica() {
  event "replica-$1" down
  kill -9 "${REPLICA_PID[$1]}"
  wait "${REPLICA_PID[$1]}" 2>/dev/null || true
  forget "${REPLICA_PID[$1]}"
}

for c in $(seq 0 $((CYCLES - 1))); do
  base=$((WARMUP + c * CYCLE))
  at $((base + CYCLE / 10))
  kill_redis
  at $((base + CYCLE / 10 + DOWN))
  start_redis
  event redis back
  at $((base + CYCLE * 4 / 10))
  kill_pg
  at $((base + CYCLE * 4 / 10 + DOWN))
  start_pg
  event postgres back
  at $((base + CYCLE * 7 / 10))
  kill_replica b
  at $((base + CYCLE * 7 / 10 + DOWN))
  start_replica b
  event replica-b back
done

load_status=0
wait "$LOAD_PID" || load_status=$?
forget "$LOAD_PID"
[ "$load_status" = 0 ] || log "the load generator exited with $load_status (see $DIR/logs/load.out)"

# ---- the ledger ------------------------------------------------------------------------------------
# Records written while the database was down wait in a replica's spool until its next
# reconciliation pass: the ledger is read once both spools are drained.
spools_drained() { [ ! -s "$DIR/spool-a.jsonl" ] && [ ! -s "$DIR/spool-b.jsonl" ]; }
wait_until 60 "the spools drained into the ledger" spools_drained
"${PSQL[@]}" -d soak -A -t -F $'\t' \
  -c "SELECT id, key, state, transaction, reason FROM x402_payments" >"$DIR/ledger.tsv"
"${PSQL[@]}" -d soak -A -t \
  -c "SELECT count(*) FROM (SELECT id, state, time FROM x402_journal_events GROUP BY 1, 2, 3 HAVING count(*) > 1) d" \
  >"$DIR/ledger-duplicates.txt"
"$GATEWAY_BIN" receipts --config "$DIR/replica-a.toml" --format json >"$DIR/receipts.json" 2>"$DIR/logs/receipts.err"

for r in a b; do
  kill -TERM "${REPLICA_PID[$r]}" 2>/dev/null || true
  wait "${REPLICA_PID[$r]}" 2>/dev/null || true
  forget "${REPLICA_PID[$r]}"
done

# ---- report ----------------------------------------------------------------------------------------
node bench/soak_report.mjs --dir "$DIR" --command "$COMMAND" --warmup "$WARMUP" \
  --load-status "$load_status"
