//! Benchmark only: the memory the replay guard needs to remember N settled authorizations (default
//! 1,000,000), using the gateway's own `InMemoryReplayGuard` and keys shaped like real ones
//! (network, asset, payer, 32-byte nonce). Prints JSON with the resident set before and after.
//!
//! ```sh
//! cargo run --release --example bench_replay -- 1000000
//! ```

use x402_gateway::payment::{InMemoryReplayGuard, ReplayGuard, ReplayKey};

const NETWORK: &str = "eip155:84532";
const ASSET: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";

/// A field of /proc/self/status in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status is readable")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field present in /proc/self/status")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let count: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("count must be a number"))
        .unwrap_or(1_000_000);
    let guard = InMemoryReplayGuard::new();
    let before = status_kib("VmRSS:");
    // Payers repeat in practice; 1,000 distinct ones each paying many times is a fair mix.
    let payers: Vec<String> = (0..1000u64).map(|i| format!("0x{i:040x}")).collect();
    let now = 1_700_000_000;
    for i in 0..count {
        // An odd multiplier is a bijection on u64: unique, well-spread nonces.
        let nonce = format!("0x{:064x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let key = ReplayKey::new(NETWORK, ASSET, &payers[(i % 1000) as usize], &nonce);
        guard
            .reserve(&key, now + 300, now)
            .await
            .expect("every key is new");
        guard.mark_settled(&key).await;
    }
    let after = status_kib("VmRSS:");
    let peak = status_kib("VmHWM:");
    println!(
        "{}",
        serde_json::json!({
            "remembered": guard.len(),
            "rss_before_kib": before,
            "rss_after_kib": after,
            "rss_delta_kib": after.saturating_sub(before),
            "peak_kib": peak,
            "bytes_per_entry": (after.saturating_sub(before) * 1024) / count.max(1),
        })
    );
}
