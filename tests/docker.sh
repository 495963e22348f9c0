#!/usr/bin/env bash
# The container image, built from the project's Dockerfile by a real Docker engine and run:
# --help, check, the non-root user, the state volume (a receipt outlives the container), the
# HEALTHCHECK, /healthz, /readyz, a 402 on a priced route, a payment served by the embedded demo
# API, and a graceful stop on SIGTERM within the grace period.
#
#   bash tests/docker.sh                     # runtime target from target/debug/x402-gateway
#   DOCKER_FULL_BUILD=1 bash tests/docker.sh # the default target: release compile in the container
#
# Starts a Docker engine (dockerd) when none answers and stops it again on exit. No registry is
# needed: missing base images are made from Debian's packages with debootstrap and kept as local
# images (x402-gateway-base/...), so later runs reuse them. Skips, saying why, only where no Docker
# engine can run at all.
#
# Environment: GATEWAY_BIN (binary for the runtime target, default target/debug/x402-gateway),
# PAY_EXAMPLE_BIN (the example buyer, default target/debug/examples/pay), DEBIAN_MIRROR (default:
# the machine's apt source), RUNTIME_IMAGE / RUST_IMAGE (use these base images instead).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's client: the build needs BuildKit, which a newer client without buildx cannot drive.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker || true)
export DOCKER_BUILDKIT=1

GATEWAY_BIN=${GATEWAY_BIN:-target/debug/x402-gateway}
PAY_EXAMPLE_BIN=${PAY_EXAMPLE_BIN:-target/debug/examples/pay}
IMAGE=x402-gateway:test
# A public test key (the README's buyer); the demo's test-mode facilitator moves no money.
BUYER_KEY=0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a
BUYER_ADDRESS=0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC
GRACE_SECS=10 # [server] grace_period default, as in the image's gateway.toml

work=$(mktemp -d)
run_id="x402-gateway-test-$$"
volume="$run_id-state"
engine_pid=""

cleanup() {
  local status=$?
  if [ -n "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1; then
    "$DOCKER" rm -f "$run_id" >/dev/null 2>&1 || true
    "$DOCKER" volume rm -f "$volume" >/dev/null 2>&1 || true
  fi
  if [ -n "$engine_pid" ]; then
    echo "docker: stopping the engine this script started (pid $engine_pid)"
    kill "$engine_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$engine_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$engine_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

skip() {
  echo "SKIP tests/docker.sh: $*"
  exit 0
}
fail() {
  echo "FAIL tests/docker.sh: $*" >&2
  if [ -n "${container_logs:-}" ]; then "$DOCKER" logs "$run_id" 2>&1 | tail -n 40 >&2 || true; fi
  exit 1
}
pass() { echo "ok - $*"; }

start_engine() {
  "$DOCKER" info >/dev/null 2>&1 && return
  command -v dockerd >/dev/null || skip "no Docker engine answers and dockerd is not installed (Debian: docker.io)"
  [ "$(id -u)" = 0 ] || skip "no Docker engine answers and starting dockerd needs root"
  echo "docker: starting dockerd (log: $work/dockerd.log)"
  dockerd --pidfile "$work/dockerd.pid" >"$work/dockerd.log" 2>&1 &
  engine_pid=$!
  for _ in $(seq 1 150); do
    "$DOCKER" info >/dev/null 2>&1 && return
    if ! kill -0 "$engine_pid" 2>/dev/null; then
      engine_pid=""
      tail -n 20 "$work/dockerd.log"
      skip "dockerd cannot run on this machine (its log is above)"
    fi
    sleep 0.2
  done
  tail -n 20 "$work/dockerd.log"
  fail "dockerd started but did not answer within 30 s"
}

# The mirror apt uses on this machine (deb822 or one-line sources), else Debian's own.
debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  # deb822: the first stanza whose Suites include bookworm itself (not only bookworm-security).
  uri=$(awk '
    /^[[:space:]]*$/ { uri = ""; suites = "" }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { suites = " " $0 " " }
    uri != "" && suites ~ / bookworm / { print uri; exit }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

# make_base NAME PACKAGES [tar-of-extra-files]: a bookworm minbase image from Debian's packages.
make_base() {
  local name=$1 packages=$2 extra=${3:-} root="$work/rootfs"
  if "$DOCKER" image inspect "$name" >/dev/null 2>&1; then
    echo "docker: base image $name (cached)"
    return
  fi
  command -v debootstrap >/dev/null || fail "base image $name is missing and debootstrap is not installed"
  [ "$(id -u)" = 0 ] || fail "base image $name is missing and debootstrap needs root: run this once as root, or name an image in RUNTIME_IMAGE"
  local mirror started=$SECONDS
  mirror=$(debian_mirror)
  echo "docker: making base image $name from $mirror (debootstrap, once)"
  rm -rf "$root"
  debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
  if [ -n "$extra" ]; then tar -C "$root" -xf "$extra"; fi
  tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$name" >/dev/null
  rm -rf "$root"
  echo "docker: base image $name made in $((SECONDS - started)) s"
}

# The build image for the full build: bookworm, a C toolchain and cmake, this machine's Rust
# toolchain, and this machine's CA bundle (crates are fetched from inside the build).
make_rust_base() {
  local name=$1 sysroot extra="$work/rust-extra.tar"
  "$DOCKER" image inspect "$name" >/dev/null 2>&1 && { echo "docker: base image $name (cached)"; return; }
  sysroot=$(rustc --print sysroot)
  mkdir -p "$work/extra/usr/local/rust" "$work/extra/etc/ssl/certs"
  cp -a "$sysroot/bin" "$sysroot/lib" "$work/extra/usr/local/rust/"
  cp /etc/ssl/certs/ca-certificates.crt "$work/extra/etc/ssl/certs/ca-certificates.crt"
  tar -C "$work/extra" -cf "$extra" .
  rm -rf "$work/extra"
  make_base "$name" ca-certificates,gcc,g++,make,cmake,libc6-dev,perl "$extra"
  rm -f "$extra"
}

start_engine
echo "docker: engine $("$DOCKER" version --format '{{.Server.Version}}')"

runtime_image=${RUNTIME_IMAGE:-x402-gateway-base/debian:bookworm}
[ -n "${RUNTIME_IMAGE:-}" ] || make_base "$runtime_image" ca-certificates
build_args=(--build-arg "RUNTIME_IMAGE=$runtime_image"
  --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")

started=$SECONDS
if [ "${DOCKER_FULL_BUILD:-0}" = 1 ]; then
  rust_image=${RUST_IMAGE:-x402-gateway-base/rust:$(rustc --version | awk '{print $2}')-bookworm}
  [ -n "${RUST_IMAGE:-}" ] || make_rust_base "$rust_image"
  echo "docker: full build (release compile inside $rust_image)"
  started=$SECONDS
  "$DOCKER" build --progress=plain "${build_args[@]}" --build-arg "RUST_IMAGE=$rust_image" -t "$IMAGE" . \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; fail "docker build (full) failed"; }
else
  [ -x "$GATEWAY_BIN" ] || fail "$GATEWAY_BIN is missing: cargo build first"
  # COPY reads from the build context: the path relative to it, one .dockerignore lets through.
  GATEWAY_BIN=$(realpath --relative-to=. "$GATEWAY_BIN")
  case "$GATEWAY_BIN" in
    target/debug/x402-gateway | target/release/x402-gateway) ;;
    *) fail "GATEWAY_BIN must be target/debug/x402-gateway or target/release/x402-gateway, not $GATEWAY_BIN" ;;
  esac
  "$DOCKER" build --progress=plain "${build_args[@]}" --target runtime --build-arg "BINARY=$GATEWAY_BIN" -t "$IMAGE" . \
    >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; fail "docker build --target runtime failed"; }
fi
pass "image built from Dockerfile in $((SECONDS - started)) s ($("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"

# What the image declares.
[ "$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")" = 10001:10001 ] || fail "image user is not 10001"
grep -q '"/var/lib/x402-gateway"' <<<"$("$DOCKER" image inspect -f '{{json .Config.Volumes}}' "$IMAGE")" \
  || fail "/var/lib/x402-gateway is not a volume"
[ "$("$DOCKER" image inspect -f '{{index .Config.Labels "org.opencontainers.image.title"}}' "$IMAGE")" = x402-gateway ] \
  || fail "no OCI title label"
grep -q /healthz <<<"$("$DOCKER" image inspect -f '{{json .Config.Healthcheck}}' "$IMAGE")" || fail "no HEALTHCHECK"
pass "image: user 10001, state volume, OCI labels, HEALTHCHECK"

# The binary runs on the image's glibc.
out=$("$DOCKER" run --rm "$IMAGE" --help) || fail "--help failed in the container"
grep -q 'Pay-per-request x402 gateway' <<<"$out" || fail "--help printed: $out"
pass "--help"

out=$("$DOCKER" run --rm "$IMAGE" check /etc/x402-gateway/gateway.toml) || fail "check of the shipped configuration failed: $out"
grep -q 'gateway.toml: OK' <<<"$out" && grep -q '/api/data' <<<"$out" || fail "check printed: $out"
printf 'unmatched = "proxy"\n[upstream]\nurl = "ftp://nowhere"\n' >"$work/bad.toml"
chmod 644 "$work/bad.toml"
if out=$("$DOCKER" run --rm -v "$work/bad.toml:/etc/x402-gateway/gateway.toml:ro" "$IMAGE" check /etc/x402-gateway/gateway.toml 2>&1); then
  fail "check accepted a broken configuration: $out"
fi
grep -q 'upstream url scheme `ftp`' <<<"$out" || fail "check refused the broken configuration for another reason: $out"
pass "check: the shipped configuration passes, a broken one is refused"

# The README's first command, in a container: read-only root, state on a named volume.
"$DOCKER" volume create "$volume" >/dev/null
"$DOCKER" run -d --name "$run_id" --read-only --tmpfs /tmp \
  -v "$volume:/var/lib/x402-gateway" -p 127.0.0.1::8402 -p 127.0.0.1::9402 \
  --health-interval 1s --health-start-period 1s \
  "$IMAGE" run --config /etc/x402-gateway/gateway.toml --demo-upstream >/dev/null
container_logs=1
api=$("$DOCKER" port "$run_id" 8402/tcp | head -n 1)
admin=$("$DOCKER" port "$run_id" 9402/tcp | head -n 1)

ready=""
for _ in $(seq 1 100); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/readyz")" = 200 ]; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || fail "/readyz never answered 200"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/healthz")" = 200 ] || fail "/healthz is not 200"
pass "/healthz and /readyz answer 200 on the admin port"

uid=$("$DOCKER" exec "$run_id" awk '/^Uid:/ {print $2}' /proc/1/status)
[ "$uid" = 10001 ] || fail "the gateway runs as uid $uid"
pass "the gateway process runs as uid 10001"

health=""
for _ in $(seq 1 50); do
  health=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$run_id")
  [ "$health" = healthy ] && break
  sleep 0.2
done
[ "$health" = healthy ] || fail "HEALTHCHECK says $health"
pass "the image's HEALTHCHECK reports healthy"

curl -s -D "$work/402.headers" -o "$work/402.body" "http://$api/api/data" || fail "priced route unreachable"
grep -q ' 402' <<<"$(head -n 1 "$work/402.headers")" || fail "priced route answered $(head -n 1 "$work/402.headers")"
grep -qi '^payment-required:' "$work/402.headers" || fail "402 without PAYMENT-REQUIRED"
grep -q 'hello from the demo API' "$work/402.body" && fail "the unpaid request reached the demo API"
pass "unpaid GET /api/data: 402 with PAYMENT-REQUIRED, the demo API untouched"

[ -x "$PAY_EXAMPLE_BIN" ] || fail "$PAY_EXAMPLE_BIN is missing: cargo build --examples first"
out=$(X402_PRIVATE_KEY=$BUYER_KEY "$PAY_EXAMPLE_BIN" "http://$api/api/data" 2>&1) || fail "payment failed: $out"
grep -q '^200 OK' <<<"$out" || fail "paid request: $out"
grep -q 'hello from the demo API' <<<"$out" || fail "the paid request was not served by the demo API: $out"
grep -qi "\"paidBy\":\"$BUYER_ADDRESS\"" <<<"$out" || fail "the demo API did not see the payer: $out"
tx=$(grep -o '"transaction": *"0x[0-9a-f]*"' <<<"$out" | grep -o '0x[0-9a-f]*' || true)
[ -n "$tx" ] || fail "no settlement transaction in PAYMENT-RESPONSE: $out"
pass "paid GET /api/data: 200 from the demo API, PAYMENT-RESPONSE $tx"

# SIGTERM with a request in flight: the gateway drains (not ready), finishes the request and
# exits 0 as soon as it is done, within the grace period. The request is a free one with a body
# the client is still sending.
api_host=${api%:*} api_port=${api##*:}
exec 3<>"/dev/tcp/$api_host/$api_port"
printf 'POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 10\r\n\r\n12345' "$api" >&3
sleep 0.5
stop_started=$(date +%s%N)
"$DOCKER" kill -s TERM "$run_id" >/dev/null
sleep 1.5
[ "$("$DOCKER" inspect -f '{{.State.Running}}' "$run_id")" = true ] \
  || fail "the gateway exited on SIGTERM with a request in flight"
# Pingora closes the admin listener with the public one, so /readyz stops answering (503 only if
# a probe slips in before the listeners close): either way a readiness probe fails.
draining=$(curl -s -o /dev/null -w '%{http_code}' "http://$admin/readyz" || true)
[ "$draining" != 200 ] || fail "/readyz still answers 200 while draining"
printf '67890' >&3
reply=$(timeout 5 cat <&3 || true)
exec 3<&-
grep -q '^HTTP/1.1 200' <<<"$reply" && grep -q '"path":"/upload"' <<<"$reply" \
  || fail "the in-flight request was not served: $reply"
code=$(timeout $((GRACE_SECS + 5)) "$DOCKER" wait "$run_id" || echo timeout)
stop_ms=$((($(date +%s%N) - stop_started) / 1000000))
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
[ "$stop_ms" -lt $((GRACE_SECS * 1000)) ] || fail "stopping took $stop_ms ms, grace period is ${GRACE_SECS}s"
logs=$("$DOCKER" logs "$run_id" 2>&1)
grep -q 'SIGTERM: draining' <<<"$logs" && grep -q 'drained: every in-flight request finished' <<<"$logs" \
  || fail "no drain on SIGTERM in the logs"
pass "SIGTERM: drained (/readyz not ready), served the request in flight, exited 0 after $stop_ms ms (grace period ${GRACE_SECS}s)"
container_logs=""

# The receipt is on the volume, readable by a new container after the first one is gone.
"$DOCKER" rm "$run_id" >/dev/null
out=$("$DOCKER" run --rm -v "$volume:/var/lib/x402-gateway" "$IMAGE" receipts --config /etc/x402-gateway/gateway.toml) \
  || fail "receipts failed: $out"
grep -q "$tx" <<<"$out" || fail "the journal on the volume has no receipt for $tx: $out"
pass "the state volume keeps the journal: receipts lists $tx after the container is gone"

echo "tests/docker.sh: all checks passed"
