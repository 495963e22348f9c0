//! Benchmark only: pre-generates signed v2 `PAYMENT-SIGNATURE` headers, one per line, so the load
//! generator can send a fresh payment with every request without signing during the run.
//!
//! The requirements are taken from the server itself, from the `PAYMENT-REQUIRED` challenge that
//! `URL` answers, so the payment deep-equals what that server advertises (the gateway or the
//! official `@x402/express` middleware alike).
//!
//! ```sh
//! cargo run --release --example bench_payments -- http://127.0.0.1:18402/paid 100000 /tmp/paid.txt
//! cargo run --release --example bench_payments -- vouchers http://127.0.0.1:18402/voucher /tmp/ch- 5000 500 500
//! ```
//! * `URL COUNT OUT_FILE`: COUNT unique `exact` payments for the challenge's first option.
//! * `vouchers URL OUT_PREFIX COUNT...`: one `batch-settlement` channel per COUNT, written to
//!   `OUT_PREFIX<k>.txt` (k from 0): first the `deposit` that opens it (it also pays one request),
//!   then COUNT vouchers for the requests after it, whose cumulative amounts are 2, 3, …, COUNT+1
//!   times the price. Each channel takes its lines in order, one request at a time, as a buyer
//!   sends them. Channels differ by their salt; the payer (and payer authorizer) is the buyer key.
//!
//! The buyer key comes from `X402_PRIVATE_KEY` (default: a well-known public test key).

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};
use x402_gateway::buyer::{random_nonce, Wallet};
use x402_gateway::payment::batch::{
    channel_id, voucher_digest, ChannelConfigWire, BATCH_SETTLEMENT, RECEIVER_AUTHORIZER_KEY,
    WITHDRAW_DELAY_KEY,
};
use x402_gateway::x402::{
    chain_id_of, decode_header_json, encode_header_json, PaymentRequired, PaymentRequirements,
    PAYMENT_REQUIRED,
};

const TEST_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";

/// How many requests' worth a channel's deposit holds: more than any run can spend, so that no
/// voucher is refused for exceeding the balance.
const DEPOSIT_REQUESTS: u128 = 1_000_000_000;

/// The payment options `url`'s 402 challenge offers.
async fn challenge(url: &str) -> Result<Vec<PaymentRequirements>> {
    let response = reqwest::get(url)
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
    Ok(challenge.accepts)
}

/// `count` items made by `make(i)` for i in `0..count`, on every core, in order: signing
/// dominates the time this takes.
fn in_parallel<F>(count: usize, make: F) -> Result<Vec<String>>
where
    F: Fn(usize) -> Result<String> + Sync,
{
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = count.div_ceil(threads).max(1);
    let chunks: Vec<Result<Vec<String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let make = &make;
                scope.spawn(move || -> Result<Vec<String>> {
                    let from = (t * per_thread).min(count);
                    let to = ((t + 1) * per_thread).min(count);
                    (from..to).map(make).collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("signing thread panicked"))
            .collect()
    });
    let mut lines = Vec::with_capacity(count);
    for chunk in chunks {
        lines.extend(chunk?);
    }
    Ok(lines)
}

fn write_lines(out: &str, lines: &[String]) -> Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {out}"))?,
    );
    for line in lines {
        writeln!(file, "{line}")?;
    }
    file.flush()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let key = std::env::var("X402_PRIVATE_KEY").unwrap_or_else(|_| TEST_KEY.to_string());
    match args.first().map(String::as_str) {
        Some("vouchers") => vouchers(&args[1..], &key).await,
        _ => exact(&args, &key).await,
    }
}

async fn exact(args: &[String], key: &str) -> Result<()> {
    let usage =
        "usage: bench_payments <URL> <COUNT> <OUT_FILE> | vouchers <URL> <OUT_PREFIX> <COUNT>...";
    let [url, count, out] = args else {
        bail!(usage);
    };
    let count: usize = count.parse().context(usage)?;
    let requirements = challenge(url)
        .await?
        .into_iter()
        .next()
        .context("the challenge offers no payment option")?;

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let wallet = Wallet::from_hex(key)?;
    let lines = in_parallel(count, |_| {
        wallet
            .payment_header_v2(&requirements, now, random_nonce())
            .map_err(anyhow::Error::from)
    })?;
    write_lines(out, &lines)?;
    eprintln!(
        "{} payments of {} {} on {} to {} written to {out}",
        lines.len(),
        requirements.amount,
        requirements.asset,
        requirements.network,
        requirements.pay_to
    );
    Ok(())
}

async fn vouchers(args: &[String], key: &str) -> Result<()> {
    let usage = "usage: bench_payments vouchers <URL> <OUT_PREFIX> <COUNT>...";
    let [url, prefix, counts @ ..] = args else {
        bail!(usage);
    };
    let counts = counts
        .iter()
        .map(|c| c.parse::<usize>().context(usage))
        .collect::<Result<Vec<_>>>()?;
    if counts.is_empty() {
        bail!(usage);
    }
    let requirements = challenge(url)
        .await?
        .into_iter()
        .find(|r| r.scheme == BATCH_SETTLEMENT)
        .with_context(|| format!("{url} offers no {BATCH_SETTLEMENT} option"))?;
    let chain_id = chain_id_of(&requirements.network)
        .with_context(|| format!("network `{}` is not an EVM network", requirements.network))?;
    let price: u128 = requirements
        .amount
        .parse()
        .context("the option's amount is not a whole number")?;
    let receiver_authorizer = requirements
        .extra
        .get(RECEIVER_AUTHORIZER_KEY)
        .and_then(|v| v.as_str())
        .context("the option names no receiver authorizer (did the facilitator list one?)")?;
    let withdraw_delay = requirements
        .extra
        .get(WITHDRAW_DELAY_KEY)
        .and_then(|v| v.as_u64())
        .context("the option sets no withdraw delay")?;
    let wallet = Wallet::from_hex(key)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();

    for (k, &count) in counts.iter().enumerate() {
        let config = ChannelConfigWire {
            payer: wallet.address(),
            payer_authorizer: wallet.address(),
            receiver: requirements.pay_to.clone(),
            receiver_authorizer: receiver_authorizer.to_string(),
            token: requirements.asset.clone(),
            withdraw_delay,
            salt: format!("0x{}", alloy_primitives::hex::encode(random_nonce())),
        };
        let parsed = config
            .parsed()
            .map_err(|e| anyhow::anyhow!("the channel's terms do not parse: {e}"))?;
        let channel = channel_id(&parsed, chain_id);
        let id = format!("{channel:#x}");
        let line = |i: usize| -> Result<String> {
            // Line i pays request i + 1 of the channel: the cumulative is that many prices.
            let cumulative = price.saturating_mul(i as u128 + 1);
            let digest = voucher_digest(channel, cumulative, chain_id);
            let voucher = json!({
                "channelId": id,
                "maxClaimableAmount": cumulative.to_string(),
                "signature": wallet.sign_digest(&digest)?,
            });
            let payload = if i == 0 {
                // The stub facilitator moves no funds, so the deposit's transfer authorization is
                // shaped like the official client's but not signed.
                json!({
                    "type": "deposit",
                    "channelConfig": config,
                    "voucher": voucher,
                    "deposit": {
                        "amount": price.saturating_mul(DEPOSIT_REQUESTS).to_string(),
                        "authorization": {"erc3009Authorization": {
                            "validAfter": now.saturating_sub(600).to_string(),
                            "validBefore": (now + requirements.max_timeout_seconds).to_string(),
                            "salt": format!("0x{}", alloy_primitives::hex::encode(random_nonce())),
                            "signature": format!("0x{}", "00".repeat(65)),
                        }},
                    },
                })
            } else {
                json!({"type": "voucher", "channelConfig": config, "voucher": voucher})
            };
            Ok(encode_header_json(&json!({
                "x402Version": 2,
                "accepted": requirements,
                "payload": payload,
            })))
        };
        let lines = in_parallel(count + 1, line)?;
        write_lines(&format!("{prefix}{k}.txt"), &lines)?;
    }
    eprintln!(
        "{} channels of {} vouchers in all ({} each) on {} to {} written to {prefix}<k>.txt",
        counts.len(),
        counts.iter().sum::<usize>(),
        requirements.amount,
        requirements.network,
        requirements.pay_to
    );
    Ok(())
}
