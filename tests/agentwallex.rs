//! The gateway against an AgentWallex emulator (X-API-Key, the `{code,type,message}` error
//! contract, batched settlement, fee tiers, real EIP-712 checks), and several facilitators chosen
//! by network with a fallback for outages.

mod common;
mod vendor;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vendor::*;

fn agentwallex_facilitator(port: u16) -> String {
    format!(
        r#"[facilitator]
kind = "agentwallex"
url = "http://127.0.0.1:{port}/api/v1"
api_key = "${{AGENTWALLEX_API_KEY}}"
timeout = "3s"
"#
    )
}

/// Base Sepolia USDC routes: one settled after the upstream answers, one before.
const ROUTES: &str = r#"
[[routes]]
match = "GET /api/data"
price = "$0.01"
network = "eip155:84532"
asset = "USDC"
[[routes]]
match = "GET /api/before"
price = "$0.01"
network = "eip155:84532"
asset = "USDC"
settle = "before"
"#;

struct AwxRig {
    upstream: Proc,
    awx: Proc,
    gateway: TestGateway,
}

impl AwxRig {
    fn start() -> Self {
        let upstream = node("upstream.mjs", &["--port", "0"]);
        let awx = agentwallex_emulator(&[]);
        let port = free_port();
        let config = vendor_config(
            port,
            upstream.port,
            &agentwallex_facilitator(awx.port),
            ROUTES,
        );
        let gateway = vendor_gateway(&config).start();
        Self {
            upstream,
            awx,
            gateway,
        }
    }

    async fn pay(&self, path: &str) -> (u16, Option<Value>, Value) {
        let url = self.gateway.url(path);
        paid_get(&url, &pay_exact(&accepted(&url).await)).await
    }

    async fn calls(&self) -> Value {
        control(&self.awx, "/__calls").await
    }
}

#[tokio::test]
async fn an_agentwallex_settlement_moves_the_token_on_a_real_chain() {
    let chain = local_chain(84532, "USDC");
    let awx = agentwallex_emulator(&[
        "--rpc",
        &chain.rpc,
        "--signer",
        &chain.signer,
        "--chain-id",
        "84532",
    ]);
    set_mode(&awx, json!({"settle": "immediate"})).await;
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let port = free_port();
    let routes = format!(
        "[[routes]]\nmatch = \"GET /api/data\"\nprice = \"$0.01\"\nnetwork = \"eip155:84532\"\nasset = \"USDC\"\npay_to = \"{}\"\n\
         [assets.\"eip155:84532\".USDC]\naddress = \"{}\"\ndecimals = 6\nname = \"USDC\"\nversion = \"2\"\n",
        chain.pay_to, chain.token
    );
    let gateway = vendor_gateway(&vendor_config(
        port,
        upstream.port,
        &agentwallex_facilitator(awx.port),
        &routes,
    ))
    .start();
    let url = gateway.url("/api/data");
    let (status, settlement, body) =
        paid_get(&url, &pay_exact_with(&accepted(&url).await, &chain.buyer.1)).await;
    assert_eq!(status, 200, "{body}");
    let tx = settlement.unwrap()["transaction"]
        .as_str()
        .unwrap()
        .to_string();
    assert_transfer_on_chain(
        &chain.rpc,
        &tx,
        &chain.token,
        &chain.buyer.0,
        &chain.pay_to,
        10_000,
    )
    .await;
}

#[tokio::test]
async fn agentwallex_payment_is_served_and_its_batched_settlement_reported_pending() {
    let rig = AwxRig::start();
    let (status, settlement, body) = rig.pay("/api/data").await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.unwrap();
    assert_eq!(settlement["success"], true);
    assert_eq!(
        settlement["status"], "pending",
        "settled in AgentWallex's next batch"
    );
    assert_eq!(settlement["transaction"], "");
    assert_eq!(settlement["network"], "eip155:84532");
    assert!(settlement["ledger_id"]
        .as_str()
        .unwrap()
        .starts_with("ldg_"));
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
    let headers = control(&rig.awx, "/__headers").await;
    assert_eq!(headers["x-api-key"], AWX_KEY);
    let settle = control(&rig.awx, "/__last/settle").await;
    assert_eq!(settle["x402Version"], 2);
    assert_eq!(settle["paymentRequirements"]["amount"], "10000");
    assert!(settle.get("syncSettle").is_none(), "an OKX-only field");
}

#[tokio::test]
async fn agentwallex_immediate_settlement_and_wrapped_answers_are_read() {
    let rig = AwxRig::start();
    set_mode(&rig.awx, json!({"settle": "immediate", "wrapped": true})).await;
    let (status, settlement, _) = rig.pay("/api/data").await;
    assert_eq!(status, 200);
    let settlement = settlement.unwrap();
    assert!(settlement["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert!(
        settlement.get("status").is_none(),
        "final: no pending status"
    );
}

#[tokio::test]
async fn agentwallex_payment_errors_are_402_with_their_code() {
    let rig = AwxRig::start();
    set_mode(&rig.awx, json!({"verify": "refuse"})).await;
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_funds");
    assert_eq!(
        body["message"],
        "the facilitator refused the payment: insufficient_funds"
    );
    set_mode(&rig.awx, json!({"verify": "normal", "settle": "refuse"})).await;
    let (status, settlement, body) = rig.pay("/api/before").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_funds");
    assert_eq!(settlement.unwrap()["success"], false);
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
}

#[tokio::test]
async fn agentwallex_refusing_the_api_key_is_a_502_that_never_shows_it() {
    let rig = AwxRig::start();
    set_mode(&rig.awx, json!({"verify": "forbidden"})).await;
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "facilitator_credentials");
    assert!(!body.to_string().contains(AWX_KEY));
    let log = rig.gateway.log();
    assert!(
        log.contains("AgentWallex refused the gateway's API key"),
        "{log}"
    );
    assert!(!log.contains(AWX_KEY));
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
}

#[tokio::test]
async fn agentwallex_wrong_api_key_stops_start_up() {
    let awx = agentwallex_emulator(&[]);
    let config = vendor_config(
        free_port(),
        9,
        &agentwallex_facilitator(awx.port)
            .replace("${AGENTWALLEX_API_KEY}", "awx_sk_test_wrong_key"),
        ROUTES,
    );
    let (ok, stderr) = run_expecting_exit(&config);
    assert!(!ok);
    assert!(
        stderr.contains("facilitator `agentwallex` refused the gateway's credentials (authentication_error: The API key is not valid)"),
        "{stderr}"
    );
    assert!(!stderr.contains("awx_sk_test_wrong_key"));
}

#[tokio::test]
async fn agentwallex_rate_limit_honours_retry_after_for_verify_only() {
    let rig = AwxRig::start();
    set_mode(&rig.awx, json!({"verify": "ratelimit:1"})).await;
    let started = Instant::now();
    let (status, _, _) = rig.pay("/api/data").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After: 1"
    );
    assert_eq!(rig.calls().await["verify"], 2);

    set_mode(&rig.awx, json!({"settle": "ratelimit"})).await;
    let (status, _, body) = rig.pay("/api/before").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "facilitator_rate_limited");
    assert_eq!(rig.calls().await["settle"], 2, "settle is never retried");
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
}

#[tokio::test]
async fn agentwallex_internal_errors_and_garbage_are_502_without_upstream() {
    let rig = AwxRig::start();
    for (mode, error) in [
        ("http500", "facilitator_error"),
        ("garbage", "facilitator_bad_response"),
    ] {
        set_mode(&rig.awx, json!({"verify": mode})).await;
        let (status, _, body) = rig.pay("/api/data").await;
        assert_eq!(status, 502, "{mode}");
        assert_eq!(body["error"], error);
    }
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
}

#[tokio::test]
async fn check_shows_the_fee_tier_and_what_the_seller_receives() {
    let awx = agentwallex_emulator(&[]);
    let routes = format!(
        "{ROUTES}[[routes]]\nmatch = \"GET /api/big\"\nprice = \"$20\"\nnetwork = \"eip155:84532\"\nasset = \"USDC\"\n"
    );
    let (ok, stdout, stderr) = check(&vendor_config(
        8402,
        9,
        &agentwallex_facilitator(awx.port),
        &routes,
    ));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("facilitator  agentwallex (agentwallex)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("10000 USDC (0.01) on eip155:84532"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "fee 200 USDC (2.0% from $0 to $10, agentwallex), seller receives 9800 USDC (0.0098)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("fee 200000 USDC (1.0% from $10 to $100, agentwallex), seller receives 19800000 USDC (19.8)"),
        "{stdout}"
    );
    assert!(!stdout.contains(AWX_KEY) && !stderr.contains(AWX_KEY));
}

/// OKX for X Layer, AgentWallex for Base Sepolia.
fn two_facilitators(okx: u16, awx: u16, awx_extra: &str) -> String {
    format!(
        r#"[[facilitators]]
name = "okx"
kind = "okx"
url = "http://127.0.0.1:{okx}"
api_key = "${{OKX_API_KEY}}"
secret_key = "${{OKX_SECRET_KEY}}"
passphrase = "${{OKX_PASSPHRASE}}"
networks = ["eip155:196"]
[[facilitators]]
name = "agentwallex"
kind = "agentwallex"
url = "http://127.0.0.1:{awx}/api/v1"
api_key = "${{AGENTWALLEX_API_KEY}}"
networks = ["eip155:84532"]
timeout = "2s"
{awx_extra}
"#
    )
}

#[tokio::test]
async fn two_facilitators_each_get_the_payments_of_their_network() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    let awx = agentwallex_emulator(&[]);
    let port = free_port();
    let routes = format!("{ROUTES}[[routes]]\nmatch = \"GET /api/xlayer\"\nprice = \"$0.01\"\n");
    let config = vendor_config(
        port,
        upstream.port,
        &two_facilitators(okx.port, awx.port, ""),
        &routes,
    );
    let gateway = vendor_gateway(&config).start();

    let url = gateway.url("/api/xlayer");
    let (status, settlement, _) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 200);
    assert_eq!(settlement.unwrap()["network"], "eip155:196");
    let url = gateway.url("/api/data");
    let (status, settlement, _) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 200);
    assert_eq!(settlement.unwrap()["network"], "eip155:84532");

    let okx_calls = control(&okx, "/__calls").await;
    let awx_calls = control(&awx, "/__calls").await;
    assert_eq!(
        (okx_calls["verify"].as_u64(), okx_calls["settle"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (awx_calls["verify"].as_u64(), awx_calls["settle"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(upstream_hits(&upstream).await, 2);
}

#[tokio::test]
async fn verification_falls_back_during_an_outage_and_only_that_facilitator_settles() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    let awx = agentwallex_emulator(&[]);
    let backup = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let facilitators = format!(
        "{}[[facilitators]]\nname = \"backup\"\nkind = \"x402\"\nurl = \"http://127.0.0.1:{}\"\nnetworks = [\"eip155:84532\"]\n",
        two_facilitators(okx.port, awx.port, "fallback = \"backup\""),
        backup.port
    );
    let gateway =
        vendor_gateway(&vendor_config(port, upstream.port, &facilitators, ROUTES)).start();
    let url = gateway.url("/api/data");
    let backup_calls = || async { control(&backup, "/__calls").await };

    // AgentWallex answers 5xx: the backup verifies and settles; AgentWallex never settles.
    set_mode(&awx, json!({"verify": "http500"})).await;
    let (status, settlement, body) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 200, "{body}");
    assert!(settlement.unwrap()["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    let calls = backup_calls().await;
    assert_eq!(
        (&calls["verify"], &calls["settle"]),
        (&json!(1), &json!(1)),
        "{calls}"
    );
    assert_eq!(control(&awx, "/__calls").await["settle"], 0);
    assert!(gateway
        .log()
        .contains("facilitator is down; verifying with its fallback"));

    // AgentWallex verifies but fails to settle: no second settlement at the backup.
    set_mode(&awx, json!({"verify": "normal", "settle": "http500"})).await;
    let (status, _, body) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 504);
    assert_eq!(body["error"], "settlement_unconfirmed");
    assert_eq!(backup_calls().await["settle"], 1);

    // A refusal is an answer, not an outage: no fallback.
    set_mode(&awx, json!({"verify": "refuse", "settle": "normal"})).await;
    let (status, _, _) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 402);
    assert_eq!(backup_calls().await["verify"], 1);
    assert_eq!(upstream_hits(&upstream).await, 2);
}

#[tokio::test]
async fn verification_falls_back_when_the_facilitator_is_unreachable() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let backup = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let down = ClosedPort::new();
    let facilitators = format!(
        "[[facilitators]]\nname = \"agentwallex\"\nkind = \"agentwallex\"\nurl = \"http://127.0.0.1:{}/api/v1\"\napi_key = \"${{AGENTWALLEX_API_KEY}}\"\nnetworks = [\"eip155:84532\"]\nfallback = \"backup\"\n\
         [[facilitators]]\nname = \"backup\"\nkind = \"x402\"\nurl = \"http://127.0.0.1:{}\"\nnetworks = [\"eip155:84532\"]\n",
        down.port,
        backup.port
    );
    let gateway =
        vendor_gateway(&vendor_config(port, upstream.port, &facilitators, ROUTES)).start();
    let url = gateway.url("/api/data");
    let (status, _, body) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(control(&backup, "/__calls").await["settle"], 1);
}

#[test]
fn a_route_network_without_a_facilitator_is_a_config_error_naming_it() {
    let config = vendor_config(
        8402,
        9,
        &two_facilitators(1, 2, ""),
        "[[routes]]\nmatch = \"GET /base\"\nprice = \"$0.01\"\nnetwork = \"eip155:8453\"\nasset = \"USDC\"\n",
    );
    let (ok, _, stderr) = check(&config);
    assert!(!ok);
    let line = config
        .lines()
        .position(|l| l.contains("GET /base"))
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "gateway.toml:{line}:1: route `GET /base` takes payments on `eip155:8453`, but no facilitator lists that network"
        )),
        "{stderr}"
    );
}
