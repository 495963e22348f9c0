#!/usr/bin/env bash
# The gateway benchmark, in one command: builds release binaries, starts a tiny upstream, a stub
# facilitator, a plain Pingora passthrough, nginx, the gateway, the official @x402/express
# middleware and x402-axum (bench/x402-axum, a project of its own) on loopback, drives each with
# wrk, and writes the table to BENCHMARKS.md. Also: the paid route behind a facilitator that takes
# SLOW_FACILITATOR_MS per call, at up to SLOW_CONCURRENCY, and a 10,000-route table.
#
#   bash bench/run.sh            # full run (about 20 minutes): DURATION=10 s, REPS=3, c = 1 and 32
#   bash bench/run.sh --smoke    # a few seconds per workload, debug build, table to target/bench/
#                                # (without x402-axum unless BENCH_X402_AXUM=1)
#
# Environment: DURATION (s), REPS, WARMUP (s), CONCURRENCY ("1 32"), WRK_THREADS (1), BENCH_BUILD
# (release|debug), IDLE_CONNS (5000), NONCES (1000000), PROFILE_REQUESTS (500 paid requests under
# callgrind; 0 skips the profile), PROFILE_WARMUP (20),
# PAID_RATE_CAP (most paid requests/s a run may need: headers are pre-signed for it),
# VOUCHER_RATE_CAP (the same for batch-settlement vouchers, PAID_RATE_CAP unless set),
# SLOW_FACILITATOR_MS (50), SLOW_CONCURRENCY ("1 32 2000"), ROUTES_LARGE (10000),
# BENCH_X402_AXUM (1 builds and measures x402-axum, 0 skips it; smoke runs default to 0),
# BENCH_REDIS_URL (redis://127.0.0.1:6379: the paid route with [redis], a key prefix of its own per
# run; "none" skips that workload), BENCH_PG_URL (postgres://postgres@127.0.0.1:5432, a server
# without a database name: the paid route with the PostgreSQL ledger, in a database of its own per
# run, dropped after it; "none" skips that workload), BENCH_ONLY ("profile": only the callgrind profile of the paid
# route, e.g. `BENCH_ONLY=profile bash bench/run.sh`; the report then holds the profile alone;
# "profile-redis": the same with `[redis]` on BENCH_REDIS_URL; "voucher": the batch-settlement
# voucher workload and what its targets compare it with, the passthrough, the free and paid routes
# and x402-axum when built; "journal": the paid route alone, with `[redis]`, with the file journal
# and with the PostgreSQL ledger, each cost against the paid route in the same run),
# BENCH_PORT_BASE (19400), BENCH_OUT (the Markdown file), BENCH_DIR (work files).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

# The command line for the report, with the settings the caller changed.
COMMAND=""
for v in BENCH_SMOKE DURATION REPS WARMUP CONCURRENCY WRK_THREADS BENCH_BUILD IDLE_CONNS NONCES \
  PROFILE_REQUESTS PROFILE_WARMUP PAID_RATE_CAP VOUCHER_RATE_CAP SLOW_FACILITATOR_MS SLOW_CONCURRENCY ROUTES_LARGE \
  BENCH_X402_AXUM BENCH_REDIS_URL BENCH_PG_URL BENCH_ONLY; do
  if [ -n "${!v+x}" ]; then COMMAND+="$v=$(printf '%q' "${!v}") "; fi
done
COMMAND+="bash bench/run.sh${*:+ $*}"

SMOKE=${BENCH_SMOKE:-0}
AXUM_ASKED=${BENCH_X402_AXUM-}
for a in "$@"; do
  case "$a" in
    --smoke) SMOKE=1 ;;
    *) echo "usage: bench/run.sh [--smoke]" >&2; exit 2 ;;
  esac
done
if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-1} REPS=${REPS:-1} WARMUP=${WARMUP:-0}
  BENCH_BUILD=${BENCH_BUILD:-debug} IDLE_CONNS=${IDLE_CONNS:-500} NONCES=${NONCES:-100000}
  PROFILE_REQUESTS=${PROFILE_REQUESTS:-10} PROFILE_WARMUP=${PROFILE_WARMUP:-3}
  # A debug gateway pays at most about a thousand requests/s on a fast machine (1,105 seen at
  # c=32); running out of pre-signed payments flags the run, so keep a wide margin over that.
  if [ "$BENCH_BUILD" = debug ]; then PAID_RATE_CAP=${PAID_RATE_CAP:-4000}; fi
  BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/BENCHMARKS.smoke.md}
  SLOW_CONCURRENCY=${SLOW_CONCURRENCY:-1 32 200}
  # Compiling x402-axum and its dependencies takes many minutes: a smoke run leaves it out unless
  # asked to (BENCH_X402_AXUM=1; it is a release build, so raise PAID_RATE_CAP too).
  BENCH_X402_AXUM=${BENCH_X402_AXUM:-0}
else
  DURATION=${DURATION:-10} REPS=${REPS:-3} WARMUP=${WARMUP:-1}
  BENCH_BUILD=${BENCH_BUILD:-release} IDLE_CONNS=${IDLE_CONNS:-5000} NONCES=${NONCES:-1000000}
  PROFILE_REQUESTS=${PROFILE_REQUESTS:-500}
  # A profile-only run never replaces the full table.
  case "${BENCH_ONLY:-all}" in
    profile | profile-redis) BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/BENCHMARKS.profile.md} ;;
    voucher) BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/BENCHMARKS.voucher.md} ;;
    journal) BENCH_OUT=${BENCH_OUT:-$ROOT/target/bench/BENCHMARKS.journal.md} ;;
  esac
  BENCH_OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
fi
PAID_RATE_CAP=${PAID_RATE_CAP:-20000} PROFILE_WARMUP=${PROFILE_WARMUP:-20}
VOUCHER_RATE_CAP=${VOUCHER_RATE_CAP:-$PAID_RATE_CAP}
SLOW_FACILITATOR_MS=${SLOW_FACILITATOR_MS:-50} SLOW_CONCURRENCY=${SLOW_CONCURRENCY:-1 32 2000}
ROUTES_LARGE=${ROUTES_LARGE:-10000} BENCH_X402_AXUM=${BENCH_X402_AXUM:-1}
CONCURRENCY=${CONCURRENCY:-1 32}
BENCH_REDIS_URL=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
# A PostgreSQL server (no database name: each run gets a database of its own, dropped after it).
BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432}
BENCH_ONLY=${BENCH_ONLY:-all}
case "$BENCH_ONLY" in
  all) ;;
  # x402-axum is profiled beside the gateway when asked for (BENCH_X402_AXUM=1): building it takes minutes.
  profile|profile-redis) BENCH_X402_AXUM=${AXUM_ASKED:-0} PROFILE_REQUESTS=${PROFILE_REQUESTS:-500}
    [ "$PROFILE_REQUESTS" -gt 0 ] || { echo "BENCH_ONLY=profile needs PROFILE_REQUESTS > 0" >&2; exit 2; } ;;
  voucher) PROFILE_REQUESTS=0 ;;
  journal) PROFILE_REQUESTS=0 BENCH_X402_AXUM=0 ;;
  *) echo "BENCH_ONLY must be all, profile, profile-redis, voucher or journal" >&2; exit 2 ;;
esac
WRK_THREADS=${WRK_THREADS:-1}
PORT_BASE=${BENCH_PORT_BASE:-19400}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench}
mkdir -p "$BENCH_DIR/logs"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd) # nginx needs absolute paths
RESULTS=$BENCH_DIR/results.jsonl
: >"$RESULTS"
export BENCH_WRK_DIR=$ROOT/bench/wrk

UPSTREAM_ADDR=127.0.0.1:$PORT_BASE
FACILITATOR_ADDR=127.0.0.1:$((PORT_BASE + 1))
BASELINE_ADDR=127.0.0.1:$((PORT_BASE + 2))
GATEWAY_ADDR=127.0.0.1:$((PORT_BASE + 3))
EXPRESS_ADDR=127.0.0.1:$((PORT_BASE + 4))
NGINX_ADDR=127.0.0.1:$((PORT_BASE + 5))
AXUM_ADDR=127.0.0.1:$((PORT_BASE + 6))
SLOW_FACILITATOR_ADDR=127.0.0.1:$((PORT_BASE + 7))
export BENCH_GATEWAY_LISTEN=$GATEWAY_ADDR
export BENCH_UPSTREAM_URL=http://$UPSTREAM_ADDR
export BENCH_FACILITATOR_URL=http://$FACILITATOR_ADDR

# Other work on the machine before this run started (the report says so when there was some).
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
LOADED=""
if awk -v l="${LOAD_AT_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(l > 0.75 * n) }'; then
  LOADED="load average $LOAD_AT_START before the run started, on $(nproc) CPUs"
fi

log() { printf '== [%4ss] %s\n' "$SECONDS" "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# ---- tools -------------------------------------------------------------------------------------
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v valgrind >/dev/null 2>&1 || [ "$PROFILE_REQUESTS" = 0 ] || missing+=(valgrind)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
# nginx as a second plain-proxy baseline: what a user would put in front of an API for one hop.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}"
fi
if [ ! -d tests/node_modules/@x402/express ]; then
  log "npm packages (tests/package-lock.json)"
  npm ci --prefix tests --no-audit --no-fund --loglevel=error
fi
# The idle-connection measurement needs a descriptor per connection on both ends.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# ---- build -------------------------------------------------------------------------------------
log "build ($BENCH_BUILD)"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ "$BENCH_BUILD" = release ]; then
  cargo build --release --locked --bin x402-gateway --examples
  BIN=$TARGET_DIR/release
else
  cargo build --locked --bin x402-gateway --examples
  BIN=$TARGET_DIR/debug
fi
GATEWAY=$BIN/x402-gateway
EX=$BIN/examples
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
AXUM=$ROOT/bench/x402-axum/target/release/bench-x402-axum
if [ "$BENCH_X402_AXUM" = 1 ]; then
  # Its own lock file and target directory: nothing of it reaches the gateway's build.
  log "build x402-axum (bench/x402-axum, release)"
  cargo build --release --locked --manifest-path bench/x402-axum/Cargo.toml
else
  log "x402-axum: skipped in this smoke run (compiling it takes minutes; bash bench/run.sh builds and measures it)"
fi

# The same gateway configuration with ROUTES_LARGE more routes, half of them priced.
LARGE_CONFIG=$BENCH_DIR/gateway-large.toml
{
  cat bench/gateway.toml
  for i in $(seq 0 $((ROUTES_LARGE - 1))); do
    if [ $((i % 2)) = 0 ]; then kind='price = "$0.001"'; else kind='free = true'; fi
    printf '\n[[routes]]\nmatch = "GET /api/v%d/items%d/:id"\n%s\n' $((i % 7)) "$i" "$kind"
  done
} >"$LARGE_CONFIG"

# The benchmark configuration with shared state in Redis, written afresh for every server start
# under a key prefix no other start uses: the runs reuse one file of pre-signed payments, which a
# replay guard kept in Redis would otherwise refuse from the second run on.
REDIS_CONFIG=$BENCH_DIR/gateway-redis.toml
write_redis_config() {
  {
    cat bench/gateway.toml
    printf '\n[redis]\nurl = "%s"\nkey_prefix = "x402-bench-%s-%s:"\n' "$BENCH_REDIS_URL" "$$" "$(date +%s%N)"
  } >"$REDIS_CONFIG"
}

# The paid route with the settlement journal: a file (each run starts an empty one), or the
# PostgreSQL ledger (each run in a new database, so no run sees another's authorizations).
JOURNAL_CONFIG=$BENCH_DIR/gateway-journal.toml
write_journal_config() {
  rm -f "$BENCH_DIR/journal.jsonl"
  { cat bench/gateway.toml; printf '\n[journal]\npath = "%s"\n' "$BENCH_DIR/journal.jsonl"; } >"$JOURNAL_CONFIG"
}
LEDGER_CONFIG=$BENCH_DIR/gateway-ledger.toml
LEDGER_DB=""
write_ledger_config() {
  LEDGER_DB=x402_bench_$$_$(date +%s%N)
  psql -X -q "$BENCH_PG_URL/postgres" -c "CREATE DATABASE $LEDGER_DB" >/dev/null
  rm -f "$BENCH_DIR/ledger-spool.jsonl"
  {
    cat bench/gateway.toml
    printf '\n[journal]\nurl = "%s/%s"\npath = "%s"\n' "$BENCH_PG_URL" "$LEDGER_DB" "$BENCH_DIR/ledger-spool.jsonl"
  } >"$LEDGER_CONFIG"
}
drop_ledger() {
  if [ -n "$LEDGER_DB" ]; then
    psql -X -q "$BENCH_PG_URL/postgres" -c "DROP DATABASE IF EXISTS $LEDGER_DB" >/dev/null || true
    LEDGER_DB=""
  fi
}

# nginx with as many workers as the Pingora servers have threads, the same forwarding headers and a
# kept-alive upstream pool; its files stay under BENCH_DIR.
NGINX_DIR=$BENCH_DIR/nginx
mkdir -p "$NGINX_DIR"
cat >"$NGINX_DIR/nginx.conf" <<NGINX
worker_processes $(nproc);
worker_rlimit_nofile 65536;
daemon off;
pid $NGINX_DIR/nginx.pid;
error_log $BENCH_DIR/logs/nginx-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $NGINX_DIR/body;
  proxy_temp_path $NGINX_DIR/proxy;
  fastcgi_temp_path $NGINX_DIR/fastcgi;
  uwsgi_temp_path $NGINX_DIR/uwsgi;
  scgi_temp_path $NGINX_DIR/scgi;
  keepalive_requests 1000000;
  upstream api { server $UPSTREAM_ADDR; keepalive 256; }
  server {
    listen $NGINX_ADDR;
    location / {
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $UPSTREAM_ADDR;
      proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGINX

# ---- processes ---------------------------------------------------------------------------------
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  drop_ledger
}
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

wait_port() { # ADDR PID SECONDS
  local deadline=$((SECONDS + ${3:-20}))
  until port_open "$1"; do
    if ! kill -0 "$2" 2>/dev/null; then echo "process $2 for $1 exited; see $BENCH_DIR/logs" >&2; exit 1; fi
    if [ $SECONDS -ge "$deadline" ]; then echo "nothing listens on $1" >&2; exit 1; fi
    sleep 0.05
  done
}

# start NAME ADDR CMD...: runs CMD in the background, sets $STARTED to its pid.
start() {
  local name=$1 addr=$2
  shift 2
  if port_open "$addr"; then echo "$addr is already in use; set BENCH_PORT_BASE" >&2; exit 1; fi
  "$@" >"$BENCH_DIR/logs/$name.out" 2>"$BENCH_DIR/logs/$name.err" &
  STARTED=$!
  PIDS+=("$STARTED")
  wait_port "$addr" "$STARTED" "${START_TIMEOUT:-20}"
}

# stop PID [SIGNAL]. Pingora servers get SIGINT, their fast shutdown (SIGTERM waits out the grace
# period); everything else SIGTERM, since background jobs of a script ignore SIGINT.
stop() {
  local pid=$1 kept=() p
  kill "-${2:-TERM}" "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

# How each server is stopped: Pingora servers and nginx by SIGINT (their fast shutdown), x402-axum
# by SIGTERM (it has no handler of its own, and background jobs ignore SIGINT).
stop_signal() { case "$1" in axum) echo TERM ;; *) echo INT ;; esac; }

# The server process under test, fresh for every run: its CPU time and peak RSS are then its own,
# and the nonces it remembers from earlier runs cannot refuse reused header files.
start_server() { # KIND
  case "$1" in
    baseline) start baseline "$BASELINE_ADDR" "$EX/passthrough" "$BASELINE_ADDR" "$UPSTREAM_ADDR" ;;
    gateway) start gateway "$GATEWAY_ADDR" "$GATEWAY" run --config bench/gateway.toml ;;
    express) start express "$EXPRESS_ADDR" node bench/express_server.mjs \
      --port "${EXPRESS_ADDR##*:}" --facilitator "$BENCH_FACILITATOR_URL" ;;
    nginx) start nginx "$NGINX_ADDR" "$NGINX" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" ;;
    axum) start axum "$AXUM_ADDR" "$AXUM" "$AXUM_ADDR" "$BENCH_FACILITATOR_URL" ;;
    gateway_slow) BENCH_FACILITATOR_URL=http://$SLOW_FACILITATOR_ADDR \
      start gateway-slow "$GATEWAY_ADDR" "$GATEWAY" run --config bench/gateway.toml ;;
    gateway_large) start gateway-large "$GATEWAY_ADDR" "$GATEWAY" run --config "$LARGE_CONFIG" ;;
    gateway_redis) write_redis_config
      start gateway-redis "$GATEWAY_ADDR" "$GATEWAY" run --config "$REDIS_CONFIG" ;;
    gateway_h2) sed 's/^\[server\]$/[server]\nhttp2 = true/' bench/gateway.toml >"$BENCH_DIR/gateway-h2.toml"
      start gateway-h2 "$GATEWAY_ADDR" "$GATEWAY" run --config "$BENCH_DIR/gateway-h2.toml" ;;
    gateway_journal) write_journal_config
      start gateway-journal "$GATEWAY_ADDR" "$GATEWAY" run --config "$JOURNAL_CONFIG" ;;
    gateway_ledger) write_ledger_config
      start gateway-ledger "$GATEWAY_ADDR" "$GATEWAY" run --config "$LEDGER_CONFIG" ;;
  esac
}

server_addr() {
  case "$1" in
    baseline) echo "$BASELINE_ADDR" ;; express) echo "$EXPRESS_ADDR" ;;
    nginx) echo "$NGINX_ADDR" ;; axum) echo "$AXUM_ADDR" ;; gateway*) echo "$GATEWAY_ADDR" ;;
  esac
}

# A server and its child processes (nginx's workers); the others have none.
process_tree() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }
cpu_ticks() {
  local p total=0
  for p in $(process_tree "$1"); do
    total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
status_kib() {
  local p total=0
  for p in $(process_tree "$1"); do
    total=$((total + $(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
http_status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

start upstream "$UPSTREAM_ADDR" "$EX/bench_upstream" "$UPSTREAM_ADDR"
start facilitator "$FACILITATOR_ADDR" "$EX/bench_facilitator" "$FACILITATOR_ADDR"
start slow-facilitator "$SLOW_FACILITATOR_ADDR" "$EX/bench_facilitator" "$SLOW_FACILITATOR_ADDR" "$SLOW_FACILITATOR_MS"

# ---- payments ----------------------------------------------------------------------------------
# Enough pre-signed headers for the warm-up and the measured run at PAID_RATE_CAP requests/s; each
# run restarts its server, so every run may use the same file.
PAID_COUNT=$(((WARMUP + DURATION) * PAID_RATE_CAP))
WARMUP_COUNT=$((WARMUP * PAID_RATE_CAP))
SIGNED_KINDS="gateway express"
# The profile alone needs only its own warm-up and measured payments.
case "$BENCH_ONLY" in
  profile | profile-redis) PAID_COUNT=$((PROFILE_WARMUP + PROFILE_REQUESTS + 3)) SIGNED_KINDS=gateway ;;
esac
[ "$BENCH_ONLY" = voucher ] && SIGNED_KINDS=gateway
[ "$BENCH_ONLY" = journal ] && SIGNED_KINDS=gateway
[ "$BENCH_X402_AXUM" = 1 ] && SIGNED_KINDS+=" axum"
log "signing $PAID_COUNT payments for each of: $SIGNED_KINDS"
for kind in $SIGNED_KINDS; do
  start_server "$kind"
  pid=$STARTED
  addr=$(server_addr "$kind")
  "$EX/bench_payments" "http://$addr/paid" "$PAID_COUNT" "$BENCH_DIR/payments-$kind.txt"
  # One payment end to end before measuring anything: a 200 proves route, price and signature agree.
  check=$("$EX/bench_client" paid "$addr" /paid "$BENCH_DIR/payments-$kind.txt" 3)
  case "$check" in *'"200":3'*) ;; *) echo "$kind refused the pre-signed payments: $check" >&2; exit 1 ;; esac
  stop "$pid" "$(stop_signal "$kind")"
done

# batch-settlement vouchers: a channel per connection (wrk -t C -c C), each with a file of its own
# whose first line is the deposit that opens the channel and the rest the vouchers, in order. Each
# run opens its channels before the load (its server is fresh); the warm-up pays from channels of
# its own, so the measured run starts exactly where its channels' records say it must.
VOUCHER_DIR=$BENCH_DIR/vouchers
# voucher_need CONC SECONDS: vouchers one connection may need. Alone it may take the whole rate cap;
# with others, twice its even share (wrk's threads are not served perfectly evenly).
voucher_need() {
  if [ "$1" -le 1 ]; then echo $(($2 * VOUCHER_RATE_CAP)); else echo $(((2 * $2 * VOUCHER_RATE_CAP + $1 - 1) / $1)); fi
}
# voucher_counts SECONDS: how many vouchers the file of each connection k holds: the most any
# concurrency that uses connection k needs.
voucher_counts() {
  local k c need most counts=()
  local max_conc=0
  for c in $CONCURRENCY; do [ "$c" -gt "$max_conc" ] && max_conc=$c; done
  for k in $(seq 0 $((max_conc - 1))); do
    most=0
    for c in $CONCURRENCY; do
      [ "$c" -gt "$k" ] || continue
      need=$(voucher_need "$c" "$1")
      [ "$need" -gt "$most" ] && most=$need
    done
    counts+=("$most")
  done
  echo "${counts[@]}"
}
# sign_vouchers NAME SECONDS: the files NAME-<k>.txt for SECONDS of load at every concurrency.
sign_vouchers() {
  local counts total=0 n
  read -ra counts <<<"$(voucher_counts "$2")"
  for n in "${counts[@]}"; do total=$((total + n)); done
  log "signing batch-settlement vouchers ($1): ${#counts[@]} channels, $total vouchers"
  "$EX/bench_payments" vouchers "http://$GATEWAY_ADDR/voucher" "$VOUCHER_DIR/$1-" "${counts[@]}"
}
if [ "$BENCH_ONLY" = all ] || [ "$BENCH_ONLY" = voucher ]; then
  rm -rf "$VOUCHER_DIR"
  mkdir -p "$VOUCHER_DIR"
  start_server gateway
  pid=$STARTED
  sign_vouchers run "$DURATION"
  if [ "$WARMUP" -gt 0 ]; then sign_vouchers warm "$WARMUP"; fi
  # The deposit and two vouchers end to end before measuring anything.
  check=$("$EX/bench_client" paid "$GATEWAY_ADDR" /voucher "$VOUCHER_DIR/run-0.txt" 3)
  case "$check" in *'"200":3'*) ;; *) echo "gateway refused the pre-signed vouchers: $check" >&2; exit 1 ;; esac
  stop "$pid" INT
fi

# ---- load --------------------------------------------------------------------------------------
# run_load WORKLOAD KIND PATH CONC REP [paid|voucher|threads] (threads: a thread per connection,
# the shape of wrk that the voucher workload needs, without payments)
run_load() {
  local workload=$1 kind=$2 path=$3 conc=$4 rep=$5 paid=${6:-}
  local threads=$((conc < WRK_THREADS ? conc : WRK_THREADS))
  start_server "$kind"
  local pid=$STARTED addr
  addr=$(server_addr "$kind")
  local script=(-s "$ROOT/bench/wrk/report.lua") warm_script=() measured=()
  if [ "$paid" = threads ]; then
    threads=$conc
  elif [ "$paid" = voucher ]; then
    # One connection per thread, each on its own channel; the channels are opened first.
    threads=$conc
    local k channels=()
    for k in $(seq 0 $((conc - 1))); do
      channels+=("$VOUCHER_DIR/run-$k.txt")
      if [ "$WARMUP" -gt 0 ]; then channels+=("$VOUCHER_DIR/warm-$k.txt"); fi
    done
    local opened
    opened=$("$EX/bench_client" first "$addr" "$path" "${channels[@]}")
    case "$opened" in *"\"200\":${#channels[@]}"*) ;; *) echo "$workload c=$conc: the deposits were not all answered 200: $opened" >&2; exit 1 ;; esac
    script=(-s "$ROOT/bench/wrk/voucher.lua")
    warm_script=(-- "$VOUCHER_DIR/warm-" "$(voucher_need "$conc" "$WARMUP")" "$path")
    measured=(-- "$VOUCHER_DIR/run-" "$(voucher_need "$conc" "$DURATION")" "$path")
  elif [ -n "$paid" ]; then
    # Every gateway flavour pays with the gateway's headers (each run has a fresh replay guard).
    local signed=$kind
    case "$kind" in gateway*) signed=gateway ;; esac
    script=(-s "$ROOT/bench/wrk/paid.lua")
    warm_script=(-- "$BENCH_DIR/payments-$signed.txt" 0 "$WARMUP_COUNT" "$threads" "$path")
    measured=(-- "$BENCH_DIR/payments-$signed.txt" "$WARMUP_COUNT" "$((PAID_COUNT - WARMUP_COUNT))" "$threads" "$path")
  fi
  if [ "$WARMUP" -gt 0 ]; then
    wrk -t"$threads" -c"$conc" -d"${WARMUP}s" "${script[@]}" "http://$addr$path" "${warm_script[@]}" \
      >>"$BENCH_DIR/logs/wrk-warmup.log" 2>&1
  fi
  local ticks_before ticks_after out line
  ticks_before=$(cpu_ticks "$pid")
  out=$(wrk -t"$threads" -c"$conc" -d"${DURATION}s" --timeout 10s "${script[@]}" "http://$addr$path" \
    "${measured[@]}" 2>&1)
  ticks_after=$(cpu_ticks "$pid")
  printf '%s\n' "--- $workload c=$conc rep=$rep" "$out" >>"$BENCH_DIR/logs/wrk.log"
  line=$(printf '%s\n' "$out" | sed -n 's/^BENCH //p')
  if [ -z "$line" ]; then echo "wrk failed for $workload c=$conc:" >&2; printf '%s\n' "$out" >&2; exit 1; fi
  printf '{"workload":"%s","concurrency":%d,"rep":%d,"cpu_ticks":%d,"clk_tck":%d,"hwm_kib":%d,"rss_kib":%d,"wrk":%s}\n' \
    "$workload" "$conc" "$rep" "$((ticks_after - ticks_before))" "$(getconf CLK_TCK)" \
    "$(status_kib "$pid" VmHWM)" "$(status_kib "$pid" VmRSS)" "$line" >>"$RESULTS"
  stop "$pid" "$(stop_signal "$kind")"
  if [ "$kind" = gateway_ledger ]; then drop_ledger; fi
  printf '   %-16s c=%-3s rep %s: %s\n' "$workload" "$conc" "$rep" \
    "$(printf '%s' "$line" | sed 's/.*"requests":\([0-9]*\),"duration_us":\([0-9]*\).*"status_errors":\([0-9]*\).*"p50_us":\([0-9]*\).*"p99_us":\([0-9]*\).*/\1 requests, non-2xx \3, p50 \4 us, p99 \5 us/')" >&2
}

# run_load_h2 WORKLOAD KIND PATH CONC REP: the same measurement over h2c with prior knowledge,
# driven by h2load (nghttp2): CONC streams in flight on up to 4 connections. Its per-request log
# gives the percentiles; the record has the shape of wrk's, so the report reads both alike.
run_load_h2() {
  local workload=$1 kind=$2 path=$3 conc=$4 rep=$5
  local conns=$((conc < 4 ? conc : 4))
  local streams=$(((conc + conns - 1) / conns))
  start_server "$kind"
  local pid=$STARTED addr
  addr=$(server_addr "$kind")
  local reqlog=$BENCH_DIR/logs/h2load-requests.tsv ticks_before ticks_after out
  rm -f "$reqlog"
  ticks_before=$(cpu_ticks "$pid")
  out=$(h2load -c "$conns" -m "$streams" -D "$DURATION" --warm-up-time="${WARMUP}s" --log-file="$reqlog" \
    "http://$addr$path" 2>&1) || { echo "h2load failed for $workload c=$conc:" >&2; printf '%s\n' "$out" >&2; exit 1; }
  ticks_after=$(cpu_ticks "$pid")
  printf '%s\n' "--- $workload c=$conc rep=$rep" "$out" >>"$BENCH_DIR/logs/h2load.log"
  local line
  line=$(node -e '
    const fs = require("node:fs");
    const [logFile, durationS, outText] = process.argv.slice(1);
    const rows = fs.readFileSync(logFile, "utf8").split("\n").filter(Boolean).map((l) => l.split("\t").map(Number));
    const times = rows.map((r) => r[2]).sort((a, b) => a - b);
    const pct = (q) => (times.length ? times[Math.min(times.length - 1, Math.floor((q / 100) * times.length))] : 0);
    // h2load counts a 4xx as failed; only requests that errored (no answer) are socket errors.
    const failed = Number((/(\d+) errored/.exec(outText) || [0, 0])[1]);
    const mean = times.length ? times.reduce((a, b) => a + b, 0) / times.length : 0;
    process.stdout.write(JSON.stringify({ requests: rows.length, duration_us: Number(durationS) * 1e6, bytes: 0,
      connect_errors: 0, read_errors: failed, write_errors: 0, status_errors: rows.filter((r) => r[1] >= 400 || r[1] < 200).length,
      timeouts: 0, p50_us: pct(50), p90_us: pct(90), p99_us: pct(99), mean_us: mean, max_us: times.at(-1) ?? 0, exhausted: 0 }));
  ' "$reqlog" "$DURATION" "$out")
  printf '{"workload":"%s","concurrency":%d,"rep":%d,"cpu_ticks":%d,"clk_tck":%d,"hwm_kib":%d,"rss_kib":%d,"wrk":%s}\n' \
    "$workload" "$conc" "$rep" "$((ticks_after - ticks_before))" "$(getconf CLK_TCK)" \
    "$(status_kib "$pid" VmHWM)" "$(status_kib "$pid" VmRSS)" "$line" >>"$RESULTS"
  stop "$pid" "$(stop_signal "$kind")"
  printf '   %-16s c=%-3s rep %s: %s\n' "$workload" "$conc" "$rep" \
    "$(printf '%s' "$line" | sed 's/.*"requests":\([0-9]*\),"duration_us":\([0-9]*\).*"status_errors":\([0-9]*\).*"p50_us":\([0-9]*\).*"p99_us":\([0-9]*\).*/\1 requests, non-2xx \3, p50 \4 us, p99 \5 us/')" >&2
}

if [ "$BENCH_ONLY" = voucher ]; then
  log "load (vouchers and their comparisons): ${DURATION}s x $REPS per workload, concurrency $CONCURRENCY"
  for rep in $(seq 1 "$REPS"); do
    for conc in $CONCURRENCY; do
      run_load baseline baseline /free "$conc" "$rep"
      run_load gateway_free gateway /free "$conc" "$rep"
      run_load gateway_paid gateway /paid "$conc" "$rep" paid
      run_load gateway_paid_local gateway /paid-local "$conc" "$rep" paid
      run_load gateway_voucher gateway /voucher "$conc" "$rep" voucher
      # The free route driven like the voucher workload: a thread per connection costs the server
      # more per request than one thread for them all (fewer requests per wake-up).
      if [ "$conc" -gt "$WRK_THREADS" ]; then run_load gateway_free_threads gateway /free "$conc" "$rep" threads; fi
      if [ "$BENCH_X402_AXUM" = 1 ]; then run_load axum_paid axum /paid "$conc" "$rep" paid; fi
    done
  done
fi

if [ "$BENCH_ONLY" = journal ]; then
  log "load (what shared state and journals cost the paid route): ${DURATION}s x $REPS per workload, concurrency $CONCURRENCY"
  for rep in $(seq 1 "$REPS"); do
    for conc in $CONCURRENCY; do
      run_load gateway_paid gateway /paid "$conc" "$rep" paid
      if [ "$BENCH_REDIS_URL" != none ]; then run_load gateway_paid_redis gateway_redis /paid "$conc" "$rep" paid; fi
      run_load gateway_paid_journal gateway_journal /paid "$conc" "$rep" paid
      if [ "$BENCH_PG_URL" != none ]; then run_load gateway_paid_ledger gateway_ledger /paid "$conc" "$rep" paid; fi
    done
  done
fi

# Everything but the profile (BENCH_ONLY=profile skips it; kept unindented so its history reads).
if [ "$BENCH_ONLY" = all ]; then
# Status sanity before measuring: the workload must be what its name says.
start_server baseline; pid=$STARTED
[ "$(http_status "http://$BASELINE_ADDR/free")" = 200 ] || { echo "baseline /free is not 200" >&2; exit 1; }
stop "$pid" INT
start_server nginx; pid=$STARTED
[ "$(http_status "http://$NGINX_ADDR/free")" = 200 ] || { echo "nginx /free is not 200" >&2; exit 1; }
stop "$pid" INT
start_server gateway_large; pid=$STARTED
[ "$(http_status "http://$GATEWAY_ADDR/api/v2/items9998/1")" = 402 ] || [ "$ROUTES_LARGE" -le 9998 ] ||
  { echo "gateway with $ROUTES_LARGE routes: /api/v2/items9998/1 is not 402" >&2; exit 1; }
stop "$pid" INT
start_server gateway; pid=$STARTED
[ "$(http_status "http://$GATEWAY_ADDR/free")" = 200 ] || { echo "gateway /free is not 200" >&2; exit 1; }
[ "$(http_status "http://$GATEWAY_ADDR/paid")" = 402 ] || { echo "gateway /paid is not 402" >&2; exit 1; }
[ "$(http_status "http://$GATEWAY_ADDR/voucher")" = 402 ] || { echo "gateway /voucher is not 402" >&2; exit 1; }
stop "$pid" INT

log "load: ${DURATION}s x $REPS per workload, concurrency $CONCURRENCY, wrk -t$WRK_THREADS"
for rep in $(seq 1 "$REPS"); do
  for conc in $CONCURRENCY; do
    run_load baseline baseline /free "$conc" "$rep"
    run_load nginx nginx /free "$conc" "$rep"
    run_load gateway_free gateway /free "$conc" "$rep"
    run_load gateway_free_large gateway_large /free "$conc" "$rep"
    run_load gateway_402 gateway /paid "$conc" "$rep"
    run_load gateway_paid gateway /paid "$conc" "$rep" paid
    run_load gateway_paid_local gateway /paid-local "$conc" "$rep" paid
    run_load gateway_voucher gateway /voucher "$conc" "$rep" voucher
    if [ "$conc" -gt "$WRK_THREADS" ]; then run_load gateway_free_threads gateway /free "$conc" "$rep" threads; fi
    if [ "$BENCH_REDIS_URL" != none ]; then run_load gateway_paid_redis gateway_redis /paid "$conc" "$rep" paid; fi
    if command -v h2load >/dev/null 2>&1; then
      run_load_h2 gateway_free_h2 gateway_h2 /free "$conc" "$rep"
      run_load_h2 gateway_402_h2 gateway_h2 /paid "$conc" "$rep"
    fi
    run_load gateway_paid_journal gateway_journal /paid "$conc" "$rep" paid
    if [ "$BENCH_PG_URL" != none ]; then run_load gateway_paid_ledger gateway_ledger /paid "$conc" "$rep" paid; fi
    run_load express_paid express /paid "$conc" "$rep" paid
    if [ "$BENCH_X402_AXUM" = 1 ]; then run_load axum_paid axum /paid "$conc" "$rep" paid; fi
  done
done

log "paid route with a facilitator taking ${SLOW_FACILITATOR_MS} ms per call, concurrency $SLOW_CONCURRENCY"
for conc in $SLOW_CONCURRENCY; do
  run_load gateway_paid_slow gateway_slow /paid "$conc" 1 paid
done

log "route table: matching cost, load and overlap report (10 and $ROUTES_LARGE routes)"
while read -r line; do
  printf '{"routes_bench":%s}\n' "$line" >>"$RESULTS"
done < <("$EX/bench_routes" bench/gateway.toml "$LARGE_CONFIG")
# `check` and a hot reload of the large file, as an operator runs them.
started=$(date +%s%N)
"$GATEWAY" check "$LARGE_CONFIG" >"$BENCH_DIR/logs/check-large.out"
check_ms=$((($(date +%s%N) - started) / 1000000))
start_server gateway_large; pid=$STARTED
reloads_before=$(grep -c 'configuration reloaded' "$BENCH_DIR/logs/gateway-large.err" || true)
started=$(date +%s%N)
kill -HUP "$pid"
deadline=$((SECONDS + 30))
until [ "$(grep -c 'configuration reloaded' "$BENCH_DIR/logs/gateway-large.err" || true)" -gt "$reloads_before" ]; do
  [ $SECONDS -lt $deadline ] || { echo "no reload of $LARGE_CONFIG within 30 s" >&2; exit 1; }
  sleep 0.01
done
reload_ms=$((($(date +%s%N) - started) / 1000000))
stop "$pid" INT
printf '{"routes_admin":{"routes":%d,"check_ms":%d,"reload_ms":%d}}\n' "$((ROUTES_LARGE + $(grep -c '^\[\[routes\]\]' bench/gateway.toml)))" \
  "$check_ms" "$reload_ms" >>"$RESULTS"


# ---- memory ------------------------------------------------------------------------------------
# measure_idle KIND: RSS of a fresh KIND server before and while it holds IDLE_CONNS connections,
# each of which has served one request. The baseline shows what Pingora itself needs per connection.
measure_idle() {
  local kind=$1 pid addr hold_pid hold_out=$BENCH_DIR/hold-$1.out deadline
  start_server "$kind"
  pid=$STARTED
  addr=$(server_addr "$kind")
  local idle_rss
  idle_rss=$(status_kib "$pid" VmRSS)
  "$EX/bench_client" hold "$addr" "$IDLE_CONNS" /free >"$hold_out" 2>"$BENCH_DIR/logs/hold.err" &
  hold_pid=$!
  PIDS+=("$hold_pid")
  deadline=$((SECONDS + 120))
  until grep -q held "$hold_out" 2>/dev/null; do
    if ! kill -0 "$hold_pid" 2>/dev/null; then echo "idle-connection client failed:" >&2; cat "$BENCH_DIR/logs/hold.err" >&2; exit 1; fi
    [ $SECONDS -lt $deadline ] || { echo "idle-connection client timed out" >&2; exit 1; }
    sleep 0.2
  done
  sleep 1
  printf '{"memory":"idle_connections","server":"%s","connections":%d,"idle_rss_kib":%d,"rss_kib":%d,"hwm_kib":%d,"fds":%d}\n' \
    "$kind" "$IDLE_CONNS" "$idle_rss" "$(status_kib "$pid" VmRSS)" "$(status_kib "$pid" VmHWM)" \
    "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)" >>"$RESULTS"
  IDLE_RSS=$idle_rss
  stop "$hold_pid"
  stop "$pid" INT
}

log "memory: $IDLE_CONNS idle keep-alive connections"
measure_idle baseline
measure_idle nginx
measure_idle gateway
idle_rss=$IDLE_RSS

log "memory: $NONCES remembered nonces"
replay=$("$EX/bench_replay" "$NONCES")
printf '{"memory":"replay_guard","nonces":%d,"gateway_idle_rss_kib":%d,"result":%s}\n' \
  "$NONCES" "$idle_rss" "$replay" >>"$RESULTS"

fi # BENCH_ONLY = all

# ---- profile -----------------------------------------------------------------------------------
# callgrind rather than perf: virtual machines often expose no hardware counters (`perf stat -e
# instructions` reports "not supported" on ours), and instruction counts repeat on a noisy machine.
if [ "$PROFILE_REQUESTS" -gt 0 ]; then
  PROFILE_CONFIG=bench/gateway.toml
  if [ "$BENCH_ONLY" = profile-redis ]; then write_redis_config; PROFILE_CONFIG=$REDIS_CONFIG; fi
  log "profile: callgrind over $PROFILE_REQUESTS paid requests ($PROFILE_CONFIG)"
  # callgrind_run KIND ADDR MODE PATH FILE -- CMD...: CMD under callgrind, driven by bench_client
  # MODE ("paid" with FILE's headers, "get" without payment); appends a record to the results.
  # Instrumentation starts off (start-up runs at near native speed) and is switched on only for the
  # measured requests, after a warm-up that fills connection pools and lazy statics.
  callgrind_run() {
    local kind=$1 addr=$2 mode=$3 path=$4 file=$5 out="$BENCH_DIR/callgrind-$1.out" pid profiled dump total_ir
    shift 6
    rm -f "$out"*
    START_TIMEOUT=180 start "callgrind-$kind" "$addr" valgrind --tool=callgrind --instr-atstart=no \
      --callgrind-out-file="$out" "$@"
    pid=$STARTED
    drive() { # COUNT SKIP
      if [ "$mode" = paid ]; then "$EX/bench_client" paid "$addr" "$path" "$file" "$1" "$2"
      else "$EX/bench_client" get "$addr" "$path" "$1"; fi
    }
    drive "$PROFILE_WARMUP" 0 >/dev/null
    callgrind_control -i on "$pid" >/dev/null 2>&1
    profiled=$(drive "$PROFILE_REQUESTS" "$PROFILE_WARMUP")
    callgrind_control -d "$pid" >/dev/null 2>&1
    stop "$pid" "$(stop_signal "$kind")"
    dump=$(ls -t "$out".* 2>/dev/null | head -n 1 || true)
    [ -n "$dump" ] || return 0
    total_ir=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
    printf '{"profile":"callgrind","kind":"%s","requests":%d,"warmup":%d,"client":%s,"instructions":%s,"dump":"%s"}\n' \
      "$kind" "$PROFILE_REQUESTS" "$PROFILE_WARMUP" "$profiled" "${total_ir:-0}" "$dump" >>"$RESULTS"
    LAST_DUMP=$dump
  }
  LAST_DUMP=""
  callgrind_run gateway "$GATEWAY_ADDR" paid /paid "$BENCH_DIR/payments-gateway.txt" -- \
    "$GATEWAY" run --config "$PROFILE_CONFIG"
  if [ -n "$LAST_DUMP" ]; then
    callgrind_annotate "$LAST_DUMP" >"$BENCH_DIR/callgrind.self.txt" 2>/dev/null || true
    callgrind_annotate --inclusive=yes "$LAST_DUMP" >"$BENCH_DIR/callgrind.inclusive.txt" 2>/dev/null || true
  fi
  # The same count of requests through what the paid request is measured against: x402-axum on the
  # same paid route, the gateway's free route and the plain Pingora passthrough (the hop's cost).
  if [ "$BENCH_ONLY" != profile-redis ]; then
    if [ "$BENCH_X402_AXUM" = 1 ]; then
      callgrind_run axum "$AXUM_ADDR" paid /paid "$BENCH_DIR/payments-axum.txt" -- \
        "$AXUM" "$AXUM_ADDR" "$BENCH_FACILITATOR_URL"
    fi
    callgrind_run gateway_free "$GATEWAY_ADDR" get /free "" -- "$GATEWAY" run --config bench/gateway.toml
    callgrind_run baseline "$BASELINE_ADDR" get /free "" -- "$EX/passthrough" "$BASELINE_ADDR" "$UPSTREAM_ADDR"
  fi
fi

# ---- report ------------------------------------------------------------------------------------
mkdir -p "$(dirname "$BENCH_OUT")"
node bench/report.mjs "$RESULTS" \
  --command "$COMMAND" --build "$BENCH_BUILD" --duration "$DURATION" --reps "$REPS" \
  --warmup "$WARMUP" --wrk-threads "$WRK_THREADS" --smoke "$SMOKE" \
  --slow-ms "$SLOW_FACILITATOR_MS" ${LOADED:+--loaded "$LOADED"} --x402-axum "$BENCH_X402_AXUM" \
  --profile-self "$BENCH_DIR/callgrind.self.txt" --profile-inclusive "$BENCH_DIR/callgrind.inclusive.txt" \
  --notes bench/notes.md >"$BENCH_OUT"
log "written $BENCH_OUT"
