//! Benchmark only: the upstream API behind the proxies, answering every request with the same small
//! JSON so that the measurement is the proxy's, not the API's.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- 127.0.0.1:18080
//! ```

#[path = "support/stub_http.rs"]
mod stub_http;

/// The same body `bench/express_server.mjs` answers, so both paid workloads move the same bytes.
const BODY: &[u8] = br#"{"ok":true,"data":"benchmark payload","items":[1,2,3]}"#;

fn main() -> std::io::Result<()> {
    let addr = stub_http::addr_from_args("127.0.0.1:18080");
    stub_http::serve(addr, |_| stub_http::Response {
        status: 200,
        body: BODY.to_vec(),
    })
}
