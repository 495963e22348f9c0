//! A buyer: requests a URL, reads the 402 challenge, signs an EIP-3009 authorization for the first
//! option it can pay, retries with `PAYMENT-SIGNATURE`, and prints the body and the settlement.
//!
//! ```sh
//! X402_PRIVATE_KEY=0x... cargo run --example pay -- http://127.0.0.1:8402/api/data
//! ```

use anyhow::{bail, Context, Result};
use base64::Engine;
use std::time::{SystemTime, UNIX_EPOCH};
use x402_gateway::buyer::{random_nonce, Wallet};
use x402_gateway::x402::{
    decode_header_json, PaymentRequired, SettleResponse, PAYMENT_REQUIRED, PAYMENT_RESPONSE,
};

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: pay <URL> [METHOD]  (private key in X402_PRIVATE_KEY)")?;
    let method =
        reqwest::Method::from_bytes(args.next().unwrap_or_else(|| "GET".into()).as_bytes())?;
    let key = std::env::var("X402_PRIVATE_KEY")
        .context("set X402_PRIVATE_KEY to the buyer's private key (hex)")?;
    let wallet = Wallet::from_hex(&key)?;
    let client = reqwest::Client::new();

    let first = client.request(method.clone(), &url).send().await?;
    if first.status() != reqwest::StatusCode::PAYMENT_REQUIRED {
        println!("{} (no payment asked)", first.status());
        println!("{}", first.text().await?);
        return Ok(());
    }
    let header = first
        .headers()
        .get(PAYMENT_REQUIRED)
        .context("402 without a PAYMENT-REQUIRED header")?;
    let (challenge, _): (PaymentRequired, _) = decode_header_json(header.as_bytes())?;
    let Some(option) = challenge
        .accepts
        .iter()
        .find(|o| o.scheme == "exact" && o.network.starts_with("eip155:"))
    else {
        bail!("no option this buyer can pay: {:?}", challenge.accepts);
    };
    eprintln!(
        "paying {} atomic units of {} on {} to {} as {}",
        option.amount,
        option.asset,
        option.network,
        option.pay_to,
        wallet.address()
    );

    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let payment = wallet.payment_header_v2(option, now, random_nonce())?;
    let paid = client
        .request(method, &url)
        .header("PAYMENT-SIGNATURE", payment)
        .send()
        .await?;
    let status = paid.status();
    let settlement = paid.headers().get(PAYMENT_RESPONSE).cloned();
    println!("{status}");
    println!("{}", paid.text().await?);
    if let Some(settlement) = settlement {
        let bytes = base64::engine::general_purpose::STANDARD.decode(settlement.as_bytes())?;
        let decoded: SettleResponse = serde_json::from_slice(&bytes)?;
        println!(
            "PAYMENT-RESPONSE {}",
            serde_json::to_string_pretty(&decoded)?
        );
    }
    if !status.is_success() {
        bail!("payment was not accepted: {status}");
    }
    Ok(())
}
