#!/usr/bin/env bash
# Keeps bench/run.sh from rotting: the whole benchmark for about a second per workload on the debug
# build (no release build), then checks that every workload ran, answered what it should and that
# the report is complete. It checks no timing: on a shared machine the numbers mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=target/bench-smoke
out=$dir/BENCHMARKS.md
# A port range of its own per run, so that two checkouts testing at once do not collide.
BENCH_PORT_BASE=${BENCH_PORT_BASE:-$((20000 + (RANDOM % 900) * 10))} \
  BENCH_DIR=$dir BENCH_OUT=$out PROFILE_REQUESTS=${PROFILE_REQUESTS:-3} \
  bash bench/run.sh --smoke

fail() { echo "bench smoke: $*" >&2; exit 1; }
rows=$(grep -cE '^\| .+ \| (1|32) \| [0-9,]+ \|' "$out" || true)
# Fifteen workloads at c=1 and c=32 (fourteen when x402-axum was not built), the free route
# driven like the voucher route at c=32 (at c=1 it is the ordinary free run), and the
# slow-facilitator workload at each of its three concurrencies. The smoke run needs h2load and
# PostgreSQL for its h2c and ledger workloads.
command -v h2load >/dev/null 2>&1 || fail "h2load (Debian: nghttp2-client) is needed for the h2c workloads"
expected=33
grep -q '`x402-axum` was not measured' "$out" && expected=31
[ "$rows" = "$expected" ] || fail "expected $expected workload rows at c=1/32 in $out, found $rows"
grep -qE '^\| gateway, paid route, facilitator taking [0-9]+ ms per call \| 200 \| [0-9,]+ \|' "$out" ||
  fail "no slow-facilitator run at c=200 in $out"
grep -q '^## Route table' "$out" || fail "no route-table measurement in $out"
grep -q 'x402-gateway check' "$out" || fail "no check/reload timing in $out"
grep -q 'nginx (all its processes)' "$out" || fail "no nginx idle-connection measurement in $out"
! grep -q FLAGGED "$out" || fail "a run was flagged: $(grep FLAGGED "$out" | head -n 3)"
grep -q 'idle keep-alive connections' "$out" || fail "no idle-connection measurement in $out"
grep -q 'remembered authorizations' "$out" || fail "no replay-guard measurement in $out"
grep -q 'instructions per paid request' "$out" || fail "no profile in $out"
grep -qE '^\| gateway, paid route with `\[redis\]`.* \| 1 \| [0-9,]+ \|' "$out" || fail "no paid run with [redis] in $out"
for workload in 'paid route with `verify = "local"`' 'paid route with `\[journal\] path`' 'paid route with `\[journal\] url`' 'free route over h2c'; do
  grep -qE "^\| gateway, $workload.* \| 32 \| [0-9,]+ \|" "$out" || fail "no run of: $workload in $out"
done
for c in 1 32; do
  grep -qE '^\| gateway, `batch-settlement` route.* \| '"$c"' \| [0-9,]+ \|' "$out" || fail "no voucher run at c=$c in $out"
done
grep -q '"200":3' "$out" || fail "the profiled payments were not all answered 200"
for server in 'gateway, free route `GET /free`' 'Pingora passthrough, `GET /free`'; do
  grep -qE "^\| $server.* \| [0-9,]+ \| \`\{\"200\":3\}\` \|" "$out" || fail "no profile of: $server in $out"
done
echo "bench smoke: ok ($out)"
