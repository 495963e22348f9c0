//! Benchmark only: an x402 facilitator that approves and "settles" everything at once, without
//! checking anything. The benchmark measures the gateway, so the facilitator must cost nothing;
//! never point a real deployment at it.
//!
//! `POST /verify` → `{"isValid":true,"payer":…}`, `POST /settle` → `{"success":true,…}`,
//! `GET /supported` → exact on `eip155:84532` (v2) and `base-sepolia` (v1), and `batch-settlement`
//! on `eip155:84532` with a fixed receiver authorizer.
//!
//! `batch-settlement` deposits get what the official facilitator answers for a fresh channel: the
//! `/verify` reports the channel's on-chain state before the deposit (empty), the `/settle` the
//! deposit as the channel's balance. The stub keeps no channel state, so it refuses to judge a
//! plain voucher: the gateway asks only when its mirror of a channel has gone stale, minutes after
//! the deposit, longer than any benchmark run keeps one server.
//!
//! ```sh
//! cargo run --release --example bench_facilitator -- 127.0.0.1:18081 [DELAY_MS]
//! ```
//! With `DELAY_MS`, every answer waits that long first (a facilitator waiting on a chain), without
//! spending CPU, to show how the gateway holds many payments in flight.

#[path = "support/stub_http.rs"]
mod stub_http;

use std::sync::atomic::{AtomicU64, Ordering};

/// The `batch-settlement` kind names a receiver authorizer, which the gateway puts in its channel
/// routes' challenge and buyers bind into their channels; any fixed address will do, since the
/// stub signs no claim.
const SUPPORTED: &str = concat!(
    r#"{"kinds":[{"x402Version":2,"scheme":"exact","network":"eip155:84532"},"#,
    r#"{"x402Version":1,"scheme":"exact","network":"base-sepolia"},"#,
    r#"{"x402Version":2,"scheme":"batch-settlement","network":"eip155:84532","extra":{"receiverAuthorizer":"0x90F79bf6EB2c4f870365E785982E1f101E93b906"}}],"#,
    r#""extensions":[],"signers":{}}"#
);

/// A channel's on-chain state holding `balance`, as the official facilitator reports it.
fn channel_state(balance: &str) -> serde_json::Value {
    serde_json::json!({
        "balance": balance,
        "totalClaimed": "0",
        "withdrawRequestedAt": 0,
        "refundNonce": "0",
    })
}

/// The answer to a `batch-settlement` call, `None` if `body` is not one. Parsed in full: deposits
/// are one per channel, so the parse costs nothing that the benchmark measures.
fn batch_answer(path: &str, body: &str, settled: &AtomicU64) -> Option<String> {
    if !body.contains(r#""batch-settlement""#) {
        return None;
    }
    let request: serde_json::Value = serde_json::from_str(body).ok()?;
    let payload = &request["paymentPayload"]["payload"];
    let payer = payload["channelConfig"]["payer"]
        .as_str()
        .unwrap_or_default();
    let network = request["paymentRequirements"]["network"]
        .as_str()
        .unwrap_or("eip155:84532");
    let deposit = payload["deposit"]["amount"].as_str();
    let answer = match (path, payload["type"].as_str(), deposit) {
        (p, Some("deposit"), Some(_)) if p.ends_with("/verify") => serde_json::json!({
            "isValid": true,
            "payer": payer,
            "extra": channel_state("0"),
        }),
        (p, Some("deposit"), Some(amount)) if p.ends_with("/settle") => {
            let n = settled.fetch_add(1, Ordering::Relaxed);
            serde_json::json!({
                "success": true,
                "transaction": format!("0x{n:064x}"),
                "network": network,
                "payer": payer,
                "amount": amount,
                "extra": {"channelState": channel_state(amount)},
            })
        }
        (p, _, _) if p.ends_with("/verify") => serde_json::json!({
            "isValid": false,
            "invalidReason": "invalid_batch_settlement_evm_verification_state_unavailable",
            "invalidMessage": "the benchmark's stub facilitator keeps no channel state",
            "payer": payer,
        }),
        _ => serde_json::json!({
            "success": false,
            "errorReason": "invalid_batch_settlement_evm_payload",
            "errorMessage": "the benchmark's stub facilitator settles deposits only",
            "transaction": "",
            "network": network,
        }),
    };
    Some(answer.to_string())
}

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
        let path = path.trim_end_matches('/');
        if req.method == "POST" {
            if let Some(json) = batch_answer(path, body, &settled) {
                return stub_http::Response {
                    status: 200,
                    body: json.into_bytes(),
                };
            }
        }
        let json = match (req.method, path) {
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
