//! Benchmark only: an x402 facilitator that approves and "settles" everything at once, without
//! checking anything. The benchmark measures the gateway, so the facilitator must cost nothing;
//! never point a real deployment at it.
//!
//! `POST /verify` → `{"isValid":true,"payer":…}`, `POST /settle` → `{"success":true,…}`,
//! `GET /supported` → exact on `eip155:84532` (v2) and `base-sepolia` (v1).
//!
//! ```sh
//! cargo run --release --example bench_facilitator -- 127.0.0.1:18081 [DELAY_MS]
//! ```
//! With `DELAY_MS`, every answer waits that long first (a facilitator waiting on a chain), without
//! spending CPU, to show how the gateway holds many payments in flight.

#[path = "support/stub_http.rs"]
mod stub_http;

use std::sync::atomic::{AtomicU64, Ordering};

const SUPPORTED: &str = r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},{"x402Version":1,"scheme":"exact","network":"base-sepolia"}],"extensions":[],"signers":{}}"#;

/// The first string value of `"key":"…"` in `body`; payers and networks are echoed back the way a
/// real facilitator would, without paying for a JSON parse.
fn string_field<'a>(body: &'a str, key: &str) -> Option<&'a str> {
    let marker = format!("\"{key}\":\"");
    let start = body.find(&marker)? + marker.len();
    let len = body[start..].find('"')?;
    Some(&body[start..start + len])
}

fn main() -> std::io::Result<()> {
    let addr = stub_http::addr_from_args("127.0.0.1:18081");
    let delay = std::env::args()
        .nth(2)
        .map(|ms| {
            ms.parse()
                .expect("DELAY_MS must be a number of milliseconds")
        })
        .map_or(std::time::Duration::ZERO, std::time::Duration::from_millis);
    let settled = AtomicU64::new(0);
    stub_http::serve_delayed(addr, delay, move |req| {
        let body = std::str::from_utf8(req.body).unwrap_or("");
        let payer =
            string_field(body, "from").unwrap_or("0x0000000000000000000000000000000000000000");
        let path = req.path.split('?').next().unwrap_or("");
        let json = match (req.method, path.trim_end_matches('/')) {
            ("POST", p) if p.ends_with("/verify") => {
                format!(r#"{{"isValid":true,"payer":"{payer}"}}"#)
            }
            ("POST", p) if p.ends_with("/settle") => {
                let n = settled.fetch_add(1, Ordering::Relaxed);
                let network = string_field(body, "network").unwrap_or("eip155:84532");
                format!(
                    r#"{{"success":true,"transaction":"0x{n:064x}","network":"{network}","payer":"{payer}"}}"#
                )
            }
            ("GET", p) if p.ends_with("/supported") => SUPPORTED.to_string(),
            _ => {
                return stub_http::Response {
                    status: 404,
                    body: br#"{"error":"not_found"}"#.to_vec(),
                }
            }
        };
        stub_http::Response {
            status: 200,
            body: json.into_bytes(),
        }
    })
}
