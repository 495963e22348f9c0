# Multi-stage build: a release binary on a slim Debian runtime, run as a non-root user.
# Build: docker build -t x402-gateway .
# Run:   docker run -p 8402:8402 -v $PWD/gateway.toml:/etc/x402-gateway/gateway.toml:ro x402-gateway
# The mounted gateway.toml must listen on 0.0.0.0 ([server] listen, and [admin] listen for probes
# from outside the container). /var/lib/x402-gateway is writable by the gateway for the journal.

FROM rust:1.95-slim-bookworm AS build
# cmake and a C compiler: Pingora builds zlib-ng, ring and zstd from C sources.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake gcc g++ make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY examples ./examples
COPY gateway.toml ./
RUN cargo build --release --locked --bin x402-gateway

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin x402 \
 && mkdir -p /var/lib/x402-gateway && chown 10001 /var/lib/x402-gateway
COPY --from=build /src/target/release/x402-gateway /usr/local/bin/x402-gateway
COPY gateway.toml /etc/x402-gateway/gateway.toml
USER 10001
WORKDIR /var/lib/x402-gateway
VOLUME /var/lib/x402-gateway
# 8402: the public API; 9402: /healthz, /readyz, /metrics
EXPOSE 8402 9402
ENTRYPOINT ["/usr/local/bin/x402-gateway"]
CMD ["run", "--config", "/etc/x402-gateway/gateway.toml"]
