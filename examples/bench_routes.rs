//! Benchmark only: what route matching and `check` cost for a configuration file. Loads each file
//! given (with the gateway's own parser), then reports how long loading and the overlap report
//! took and the matching cost per request over a fixed set of request paths.
//!
//! ```sh
//! cargo run --release --example bench_routes -- bench/gateway.toml target/bench/gateway-10k.toml
//! ```
//! One JSON line per file: `{"file":…,"routes":N,"load_ms":…,"overlaps_ms":…,"overlaps":N,
//! "ns_per_match":…,"ns_deep":…}`. Matching time is the best of several rounds, the figure least
//! disturbed by other work on the machine.

use anyhow::{Context, Result};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;
use x402_gateway::config::GatewayConfig;

/// The same requests against every file: the benchmark's free and paid routes, a parameterised
/// route and a path nothing matches (all of them in `bench/gateway.toml`'s ten routes).
const PATHS: [&str; 4] = ["/free", "/paid", "/api/orders/7", "/nothing/here"];
/// A route four segments deep in the generated table (in a small table, a miss at the second).
const DEEP: [&str; 1] = ["/api/v3/items9999/42"];
const ROUNDS: usize = 7;
const MATCHES_PER_ROUND: usize = 200_000;

fn main() -> Result<()> {
    for file in std::env::args().skip(1) {
        let started = Instant::now();
        let config = GatewayConfig::load(Path::new(&file))
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot load {file}"))?;
        let load_ms = started.elapsed().as_secs_f64() * 1e3;

        let started = Instant::now();
        let overlaps = config.routes.overlaps().len();
        let overlaps_ms = started.elapsed().as_secs_f64() * 1e3;

        let best = same_requests(&config);
        let deep = deep_request(&config);
        println!(
            "{{\"file\":{:?},\"routes\":{},\"load_ms\":{load_ms:.2},\"overlaps_ms\":{overlaps_ms:.2},\"overlaps\":{overlaps},\"ns_per_match\":{best:.1},\"ns_deep\":{deep:.1}}}",
            file,
            config.routes.in_file_order().len()
        );
    }
    Ok(())
}

// Two functions of their own, so that a profiler (`valgrind --tool=callgrind`) counts the
// instructions of each set of requests apart.
#[inline(never)]
fn same_requests(config: &GatewayConfig) -> f64 {
    best_ns_per_match(config, &PATHS)
}

#[inline(never)]
fn deep_request(config: &GatewayConfig) -> f64 {
    best_ns_per_match(config, &DEEP)
}

/// Nanoseconds per `find` over `paths` in turn, the best of `ROUNDS`.
fn best_ns_per_match(config: &GatewayConfig, paths: &[&str]) -> f64 {
    let method = http::Method::GET;
    let mut best = f64::INFINITY;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for i in 0..MATCHES_PER_ROUND {
            let path = paths[i % paths.len()];
            black_box(config.routes.find(&method, black_box(path)));
        }
        best = best.min(started.elapsed().as_secs_f64() * 1e9 / MATCHES_PER_ROUND as f64);
    }
    best
}
