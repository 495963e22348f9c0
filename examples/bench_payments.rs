//! Benchmark only: pre-generates unique signed v2 `PAYMENT-SIGNATURE` headers, one per line, so the
//! load generator can send a fresh payment with every request without signing during the run.
//!
//! The requirements are taken from the server itself: the first option (`accepts[0]`) of the
//! `PAYMENT-REQUIRED` challenge that `URL` answers, so the payment deep-equals what that server
//! advertises (the gateway or the official `@x402/express` middleware alike).
//!
//! ```sh
//! cargo run --release --example bench_payments -- http://127.0.0.1:18402/paid 100000 /tmp/paid.txt
//! ```
//! The buyer key comes from `X402_PRIVATE_KEY` (default: a well-known public test key).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};
use x402_gateway::buyer::{random_nonce, Wallet};
use x402_gateway::x402::{decode_header_json, PaymentRequired, PAYMENT_REQUIRED};

const TEST_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_payments <URL> <COUNT> <OUT_FILE>";
    let url = args.next().context(usage)?;
    let count: usize = args.next().context(usage)?.parse().context(usage)?;
    let out = args.next().context(usage)?;
    let key = std::env::var("X402_PRIVATE_KEY").unwrap_or_else(|_| TEST_KEY.to_string());

    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if response.status() != reqwest::StatusCode::PAYMENT_REQUIRED {
        bail!("{url} answered {} instead of 402", response.status());
    }
    let header = response
        .headers()
        .get(PAYMENT_REQUIRED)
        .context("402 without a PAYMENT-REQUIRED header")?;
    let (challenge, _): (PaymentRequired, serde_json::Value) =
        decode_header_json(header.as_bytes())?;
    let requirements = challenge
        .accepts
        .into_iter()
        .next()
        .context("the challenge offers no payment option")?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = count.div_ceil(threads);
    // Signing dominates; split it over every core and keep each thread's lines in order.
    let chunks: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let requirements = &requirements;
                let key = key.as_str();
                scope.spawn(move || -> Result<Vec<String>> {
                    let wallet = Wallet::from_hex(key)?;
                    let n = per_thread.min(count.saturating_sub(t * per_thread));
                    (0..n)
                        .map(|_| {
                            wallet
                                .payment_header_v2(requirements, now, random_nonce())
                                .map_err(anyhow::Error::from)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread panicked"))
            .collect()
    });

    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&out).with_context(|| format!("cannot create {out}"))?,
    );
    let mut written = 0;
    for chunk in chunks {
        for line in chunk? {
            writeln!(file, "{line}")?;
            written += 1;
        }
    }
    file.flush()?;
    eprintln!(
        "{written} payments of {} {} on {} to {} written to {out}",
        requirements.amount, requirements.asset, requirements.network, requirements.pay_to
    );
    Ok(())
}
