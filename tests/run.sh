#!/usr/bin/env bash
# Runs every test: unit tests, the integration tests against the real binary, and the end-to-end
# suite on a local chain with the official x402 clients and facilitator.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== npm packages (tests/package-lock.json)"
npm ci --prefix tests --no-audit --no-fund --loglevel=error

echo "== build"
cargo build --all-targets --locked --features rig-tests

echo "== unit and integration tests"
cargo test --locked --features rig-tests

echo "== fuzzing: 30 s of every parser target from its corpus (fuzz/), a crash or hang fails"
bash fuzz/run.sh -max_total_time=30

echo "== the official x402 MCP client (PyPI x402, on the MCP Python SDK 1.x it is written for)"
[ -x target/venv-mcp/bin/python ] && target/venv-mcp/bin/python -c "import x402.mcp, mcp.client.streamable_http" 2>/dev/null || {
  python3 -m venv target/venv-mcp
  target/venv-mcp/bin/pip install --quiet --disable-pip-version-check "x402[mcp,evm]==2.25.0" "mcp==1.30.0"
}

echo "== end-to-end on a local chain"
GATEWAY_BIN="$PWD/target/debug/x402-gateway" PAY_EXAMPLE_BIN="$PWD/target/debug/examples/pay" \
  node --test --test-concurrency=1 tests/e2e/

echo "== soak and chaos: a minute of paid load through two replicas while Redis, PostgreSQL and a replica are killed (bench/soak.sh)"
GATEWAY_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/x402-gateway" \
  BENCH_PAYMENTS_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/bench_payments" \
  SOAK_DURATION=60s bash bench/soak.sh

echo "== Kubernetes manifests against the official schemas"
[ -x target/venv/bin/kubernetes-validate ] || {
  python3 -m venv target/venv
  target/venv/bin/pip install --quiet --disable-pip-version-check kubernetes-validate
}
target/venv/bin/kubernetes-validate --strict examples/kubernetes/gateway.yaml

echo "== container image: built from the Dockerfile and run (Docker engine)"
GATEWAY_BIN="$PWD/target/debug/x402-gateway" PAY_EXAMPLE_BIN="$PWD/target/debug/examples/pay" \
  bash tests/docker.sh

echo "== benchmark smoke run (no timing checked)"
bash bench/smoke.sh
