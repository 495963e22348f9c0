# x402-gateway on a slim Debian runtime, run as a non-root user (uid 10001).
#
#   docker build -t x402-gateway .                       # release compile inside the build image
#   cargo build --release --locked
#   docker build --target runtime -t x402-gateway .      # the binary you built (glibc: bookworm's)
#
#   docker run -p 8402:8402 x402-gateway run --config /etc/x402-gateway/gateway.toml --demo-upstream
#   docker run -p 8402:8402 -v $PWD/my.toml:/etc/x402-gateway/gateway.toml:ro x402-gateway
#
# Base images are build arguments, so an offline or air-gapped build can name local images:
#   docker build --build-arg RUST_IMAGE=my/rust:1.95 --build-arg RUNTIME_IMAGE=my/debian:bookworm .
# The runtime image needs /bin/sh and, when it has no CA bundle yet, apt (ca-certificates is
# installed only if missing). The build image needs cargo; cmake and a C compiler are installed
# with apt only if missing (Pingora builds zlib-ng, ring and zstd from C sources).
#
# The image's /etc/x402-gateway/gateway.toml is the repository's gateway.toml (demo API, test-mode
# facilitator) with both listeners on 0.0.0.0 and the journal on the state volume. A mounted
# configuration must also listen on 0.0.0.0 ([server] listen; [admin] listen for probes from
# outside the container). /var/lib/x402-gateway, the working directory, is a volume writable by
# the gateway: the settlement journal goes there.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Everything the gateway needs at run time except the binary.
FROM ${RUNTIME_IMAGE} AS base
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends ca-certificates \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 x402 \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin x402 \
 && mkdir -p /var/lib/x402-gateway /etc/x402-gateway \
 && chown 10001:10001 /var/lib/x402-gateway
COPY gateway.toml /tmp/gateway.toml
# The shipped configuration, adapted to a container; the greps fail the build if gateway.toml no
# longer has the lines this rewrites.
RUN sed -e 's|^listen = "127.0.0.1:8402"|listen = "0.0.0.0:8402"|' \
        -e 's|^listen = "127.0.0.1:9402"|listen = "0.0.0.0:9402"|' \
        -e 's|^# \[journal\]|[journal]|' \
        -e 's|^# path = "/var/lib/x402-gateway/journal.jsonl"|path = "/var/lib/x402-gateway/journal.jsonl"|' \
        /tmp/gateway.toml > /etc/x402-gateway/gateway.toml \
 && rm /tmp/gateway.toml \
 && grep -q '^listen = "0.0.0.0:8402"' /etc/x402-gateway/gateway.toml \
 && grep -q '^listen = "0.0.0.0:9402"' /etc/x402-gateway/gateway.toml \
 && grep -q '^path = "/var/lib/x402-gateway/journal.jsonl"' /etc/x402-gateway/gateway.toml
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="x402-gateway" \
      org.opencontainers.image.description="Pay-per-request x402 gateway in front of any HTTP API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /var/lib/x402-gateway
VOLUME /var/lib/x402-gateway
# 8402: the public API; 9402: /healthz, /readyz, /metrics (keep it off the public network)
EXPOSE 8402 9402
# /healthz on the admin port, with bash's /dev/tcp (the image has no HTTP client). A configuration
# that moves [admin] listen off port 9402 needs `docker run --health-cmd` (or --no-healthcheck).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9402 && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/x402-gateway"]
CMD ["run", "--config", "/etc/x402-gateway/gateway.toml"]

# The runtime image from a binary built outside (cargo build --release, or a debug build for
# tests): docker build --target runtime [--build-arg BINARY=target/debug/x402-gateway] .
# The binary must link against bookworm's glibc (2.36) or older: build it on bookworm.
FROM base AS runtime
ARG BINARY=target/release/x402-gateway
COPY ${BINARY} /usr/local/bin/x402-gateway

FROM ${RUST_IMAGE} AS build
RUN if ! command -v cmake >/dev/null || ! command -v g++ >/dev/null || ! command -v make >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends cmake gcc g++ make \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY gateway.toml ./
RUN cargo build --release --locked --bin x402-gateway

# The default target: the release binary compiled above.
FROM base AS release
COPY --from=build /src/target/release/x402-gateway /usr/local/bin/x402-gateway
