//! Rig pieces for the vendor facilitator tests: the OKX and AgentWallex emulators, gateways with
//! their credentials and a debug log, buyers signing `exact` and session-key (`aggr_deferred`)
//! payments, and a local chain on which the emulators settle for real when asked to.
#![allow(dead_code)]

use crate::common::*;
use base64::Engine;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;
use x402_gateway::buyer::{random_nonce, Wallet};
use x402_gateway::x402::PaymentRequirements;

pub const OKX_KEY: &str = "okx-test-key-7f3a";
pub const OKX_SECRET: &str = "okx-test-secret-91bc";
pub const OKX_PASSPHRASE: &str = "okx-test-passphrase-c0de";
pub const AWX_KEY: &str = "awx_sk_test_5e1f9a77";
/// A session key of the buyer's smart account (a public test key).
pub const SESSION_KEY: &str = "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6";
/// The buyer's smart account that the session key signs for.
pub const AA_ACCOUNT: &str = "0x15d34AAf54267DB7D7c367839AAf71A00a2C6A65";
pub const USDT0: &str = "0x779Ded0c9e1022225f8E0630b35a9b54bE713736";

pub fn okx_emulator(extra: &[&str]) -> Proc {
    let mut args = vec![
        "--port",
        "0",
        "--key",
        OKX_KEY,
        "--secret",
        OKX_SECRET,
        "--passphrase",
        OKX_PASSPHRASE,
    ];
    args.extend_from_slice(extra);
    node("okx_emulator.mjs", &args)
}

pub fn agentwallex_emulator(extra: &[&str]) -> Proc {
    let mut args = vec!["--port", "0", "--key", AWX_KEY];
    args.extend_from_slice(extra);
    node("agentwallex_emulator.mjs", &args)
}

/// The environment the gateway reads its credentials from.
pub fn credentials_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("OKX_API_KEY", OKX_KEY),
        ("OKX_SECRET_KEY", OKX_SECRET),
        ("OKX_PASSPHRASE", OKX_PASSPHRASE),
        ("AGENTWALLEX_API_KEY", AWX_KEY),
    ]
}

/// `[facilitator]` for the OKX emulator on `port`; `extra` adds keys (e.g. `api = "legacy"`).
pub fn okx_facilitator(port: u16, extra: &str) -> String {
    format!(
        r#"[facilitator]
kind = "okx"
url = "http://127.0.0.1:{port}"
api_key = "${{OKX_API_KEY}}"
secret_key = "${{OKX_SECRET_KEY}}"
passphrase = "${{OKX_PASSPHRASE}}"
timeout = "3s"
settle_poll_deadline = "3s"
{extra}
"#
    )
}

/// A gateway configuration on X Layer (USD₮0) with `facilitators` and `routes` spliced in.
pub fn vendor_config(
    gateway_port: u16,
    upstream_port: u16,
    facilitators: &str,
    routes: &str,
) -> String {
    let admin_port = free_port();
    format!(
        r#"[server]
listen = "127.0.0.1:{gateway_port}"
threads = 2
[admin]
listen = "127.0.0.1:{admin_port}"
[upstream]
url = "http://127.0.0.1:{upstream_port}"
{facilitators}
[defaults]
network = "eip155:196"
asset = "USDT0"
pay_to = "{PAY_TO}"
max_timeout_seconds = 120
{routes}
"#
    )
}

/// The seller set-ups of the OKX guides: an `exact` route (async by default), a synchronous one,
/// one settled before the upstream is called, and a batch route.
pub const OKX_ROUTES: &str = r#"
[[routes]]
match = "GET /api/data"
price = "$0.01"
description = "Premium data endpoint"
[[routes]]
match = "GET /api/sync"
price = "$0.01"
sync_settle = true
[[routes]]
match = "GET /api/before"
price = "$0.01"
settle = "before"
sync_settle = true
[[routes]]
match = "GET /api/batch"
price = "$0.001"
scheme = "aggr_deferred"
"#;

/// The log filter of vendor gateways: the facilitator calls at debug, the proxy's own chatter not.
pub const VENDOR_LOG: &str =
    "debug,pingora_core=warn,pingora_proxy=warn,hyper=info,reqwest=info,h2=info,rustls=info";

/// A gateway on `config` with the facilitator credentials in its environment and its facilitator
/// calls in its log ([`TestGateway::log`]).
pub fn vendor_gateway(config: &str) -> TestGatewayBuilder {
    TestGateway::builder(config)
        .envs(credentials_env())
        .rust_log(VENDOR_LOG)
}

/// Runs `x402-gateway run` expecting it to stop by itself; returns (success, stderr).
pub fn run_expecting_exit(config: &str) -> (bool, String) {
    TestGateway::builder(config)
        .envs(credentials_env())
        // The binary's default filter: what an operator sees when start-up is refused.
        .rust_log("info,pingora_core=warn,pingora_proxy=warn")
        .run_to_exit(Duration::from_secs(20))
}

/// `x402-gateway check`: (success, stdout, stderr).
pub fn check(config: &str) -> (bool, String, String) {
    let path = write_config(config);
    let out = Command::new(gateway_bin())
        .arg("check")
        .arg(&path)
        .envs(credentials_env())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub async fn get_json(url: String) -> Value {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

pub async fn post_json(url: String, body: Value) {
    let r = http().post(url).json(&body).send().await.unwrap();
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
}

/// The emulator's control endpoint `path` (e.g. `/__calls`).
pub async fn control(emulator: &Proc, path: &str) -> Value {
    get_json(format!("http://127.0.0.1:{}{path}", emulator.port)).await
}

pub async fn set_mode(emulator: &Proc, modes: Value) {
    post_json(format!("http://127.0.0.1:{}/__mode", emulator.port), modes).await;
}

pub async fn upstream_hits(upstream: &Proc) -> u64 {
    get_json(format!("http://127.0.0.1:{}/__hits", upstream.port)).await["hits"]
        .as_u64()
        .unwrap()
}

/// The first option of `url`'s challenge.
pub async fn accepted(url: &str) -> Value {
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 402);
    decode_b64_json(r.headers()["payment-required"].to_str().unwrap())["accepts"][0].clone()
}

/// An `exact` payment by the test buyer for `accepted`.
pub fn pay_exact(accepted: &Value) -> String {
    let requirements: PaymentRequirements = serde_json::from_value(accepted.clone()).unwrap();
    sign_v2(&requirements, |_| {})
}

/// The session certificate the emulated TEE would have issued for `SESSION_KEY` on `account`.
pub fn session_cert(account: &str) -> String {
    let session = Wallet::from_hex(SESSION_KEY).unwrap();
    base64::engine::general_purpose::STANDARD
        .encode(json!({"account": account, "sessionKey": session.address()}).to_string())
}

/// An `aggr_deferred` payment: `from` is the smart account, the signature the session key's, and
/// `accepted.extra.sessionCert` the certificate binding them.
pub fn pay_with_session_key(accepted: &Value, cert: &str) -> (String, Value) {
    let mut accepted = accepted.clone();
    accepted["extra"]["sessionCert"] = json!(cert);
    let requirements: PaymentRequirements = serde_json::from_value(accepted.clone()).unwrap();
    let session = Wallet::from_hex(SESSION_KEY).unwrap();
    let mut auth = session.authorize(&requirements, now(), random_nonce());
    auth.from = AA_ACCOUNT.to_string();
    let chain_id = x402_gateway::x402::chain_id_of(&requirements.network).unwrap();
    let signature = session.sign(&auth, &requirements, chain_id).unwrap();
    let payload = json!({"x402Version": 2, "accepted": accepted, "payload": {"signature": signature, "authorization": auth}});
    (encode_b64_json(&payload), payload)
}

/// Sends a paid GET; returns (status, PAYMENT-RESPONSE decoded if any, JSON body or Null).
pub async fn paid_get(url: &str, payment: &str) -> (u16, Option<Value>, Value) {
    let r = http()
        .get(url)
        .header("PAYMENT-SIGNATURE", payment)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let settlement = r
        .headers()
        .get("payment-response")
        .map(|h| decode_b64_json(h.to_str().unwrap()));
    let body = r.json().await.unwrap_or(Value::Null);
    (status, settlement, body)
}

/// A JSON-RPC call to the local chain.
pub async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let answer: Value = http()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["result"].clone()
}

/// A 32-byte log topic holding an address.
fn address_topic(address: &str) -> String {
    format!("0x{:0>64}", address.trim_start_matches("0x").to_lowercase())
}

/// Asserts that `tx` was mined successfully and moved exactly `amount` of `token` from `from` to
/// `to`, in one `Transfer` and no other.
pub async fn assert_transfer_on_chain(
    rpc_url: &str,
    tx: &str,
    token: &str,
    from: &str,
    to: &str,
    amount: u64,
) {
    let receipt = rpc(rpc_url, "eth_getTransactionReceipt", json!([tx])).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let transfer_topic = format!(
        "0x{}",
        alloy_primitives::hex::encode(alloy_primitives::keccak256(
            "Transfer(address,address,uint256)"
        ))
    );
    let transfers: Vec<&Value> = receipt["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["topics"][0] == transfer_topic.as_str())
        .collect();
    assert_eq!(transfers.len(), 1, "{receipt}");
    let log = transfers[0];
    assert_eq!(
        log["address"].as_str().unwrap().to_lowercase(),
        token.to_lowercase()
    );
    assert_eq!(log["topics"][1], address_topic(from).as_str());
    assert_eq!(log["topics"][2], address_topic(to).as_str());
    assert_eq!(log["data"], format!("0x{amount:064x}").as_str());
}

/// A local chain (chain.mjs) and what it set up: rpc URL, token, payTo, facilitator signer key and
/// the first funded buyer's (address, key).
pub struct LocalChain {
    pub process: Proc,
    pub rpc: String,
    pub token: String,
    pub pay_to: String,
    pub signer: String,
    pub buyer: (String, String),
}

pub fn local_chain(chain_id: u64, token_name: &str) -> LocalChain {
    let id = chain_id.to_string();
    let process = node(
        "chain.mjs",
        &["--port", "0", "--chain-id", &id, "--name", token_name],
    );
    let info = process.ready.clone();
    let text = |v: &Value| v.as_str().unwrap().to_string();
    LocalChain {
        rpc: text(&info["rpc"]),
        token: text(&info["token"]),
        pay_to: text(&info["payTo"]),
        signer: text(&info["facilitatorKey"]),
        buyer: (
            text(&info["buyers"][0]["address"]),
            text(&info["buyers"][0]["key"]),
        ),
        process,
    }
}

/// A fresh v2 payment for `accepted`, signed with `key`.
pub fn pay_exact_with(accepted: &Value, key: &str) -> String {
    let requirements: PaymentRequirements = serde_json::from_value(accepted.clone()).unwrap();
    Wallet::from_hex(key)
        .unwrap()
        .payment_header_v2(&requirements, now(), random_nonce())
        .unwrap()
}
