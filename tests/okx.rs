//! The gateway against an OKX emulator that authenticates like OKX (HMAC, timestamp, passphrase)
//! and verifies EIP-712 signatures for real: every row of OKX's settlement status table, both API
//! generations, batch payments signed by a session key, and every class of OKX error.

mod common;
mod vendor;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use vendor::*;

/// Upstream, OKX emulator and gateway with the OKX guide's routes.
struct OkxRig {
    upstream: Proc,
    okx: Proc,
    gateway: TestGateway,
}

impl OkxRig {
    fn start(facilitator_extra: &str) -> Self {
        Self::with(facilitator_extra, OKX_ROUTES)
    }

    fn with(facilitator_extra: &str, routes: &str) -> Self {
        Self::edited(facilitator_extra, routes, |config| config)
    }

    /// [`OkxRig::with`], the configuration text passed through `edit` before the gateway starts.
    fn edited(facilitator_extra: &str, routes: &str, edit: impl FnOnce(String) -> String) -> Self {
        let upstream = node("upstream.mjs", &["--port", "0"]);
        let okx = okx_emulator(&[]);
        let port = free_port();
        let config = edit(vendor_config(
            port,
            upstream.port,
            &okx_facilitator(okx.port, facilitator_extra),
            routes,
        ));
        let gateway = vendor_gateway(&config).start();
        Self {
            upstream,
            okx,
            gateway,
        }
    }

    async fn pay(&self, path: &str) -> (u16, Option<Value>, Value) {
        let url = self.gateway.url(path);
        let payment = pay_exact(&accepted(&url).await);
        paid_get(&url, &payment).await
    }

    async fn calls(&self) -> Value {
        control(&self.okx, "/__calls").await
    }

    async fn last(&self, endpoint: &str) -> Value {
        control(&self.okx, &format!("/__last/{endpoint}")).await
    }
}

#[tokio::test]
async fn async_exact_payment_is_served_with_a_pending_payment_response() {
    let rig = OkxRig::start("");
    let (status, settlement, body) = rig.pay("/api/data").await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.expect("PAYMENT-RESPONSE");
    assert_eq!(settlement["success"], true);
    assert_eq!(
        settlement["status"], "pending",
        "buyers can tell pending from final"
    );
    assert!(settlement["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert_eq!(settlement["network"], "eip155:196");
    assert_eq!(upstream_hits(&rig.upstream).await, 1);

    let settle = rig.last("settle").await;
    assert_eq!(settle["syncSettle"], false, "syncSettle is always sent");
    assert_eq!(settle["x402Version"], 2);
    let requirements = &settle["paymentRequirements"];
    assert_eq!(requirements["amount"], "10000");
    assert_eq!(requirements["asset"], USDT0);
    assert_eq!(requirements["payTo"], PAY_TO);
    assert_eq!(
        requirements["extra"],
        json!({"name": "USD\u{20AE}0", "version": "1"})
    );
    let headers = control(&rig.okx, "/__headers").await;
    assert_eq!(headers["ok-access-key"], OKX_KEY);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers["ok-access-timestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(headers.get("ok-access-project").is_none());
}

#[tokio::test]
async fn sync_exact_payment_is_served_once_confirmed() {
    let rig = OkxRig::start("");
    let (status, settlement, _) = rig.pay("/api/sync").await;
    assert_eq!(status, 200);
    let settlement = settlement.unwrap();
    assert_eq!(settlement["status"], "success");
    assert!(settlement["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert_eq!(rig.last("settle").await["syncSettle"], true);
    assert_eq!(rig.calls().await["status"], 0, "nothing to poll");
}

#[tokio::test]
async fn settlement_timeout_is_polled_until_confirmed_then_served() {
    let rig = OkxRig::start("");
    set_mode(&rig.okx, json!({"settle": "timeout-success"})).await;
    let started = Instant::now();
    let (status, settlement, _) = rig.pay("/api/sync").await;
    assert_eq!(status, 200);
    let settlement = settlement.unwrap();
    assert_eq!(
        settlement["status"], "success",
        "the final status, not `timeout`"
    );
    let tx = settlement["transaction"].as_str().unwrap().to_string();
    assert!(tx.starts_with("0x"));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "polled every second"
    );
    assert_eq!(rig.calls().await["status"], 2, "pending, then success");
    assert_eq!(rig.last("status").await["txHash"], tx);
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
}

#[tokio::test]
async fn settlement_failing_after_timeout_is_a_402_and_the_upstream_is_never_called() {
    let rig = OkxRig::start("");
    set_mode(&rig.okx, json!({"settle": "timeout-failed"})).await;
    let (status, settlement, body) = rig.pay("/api/before").await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "onchain_error");
    let settlement = settlement.expect("the failure is in PAYMENT-RESPONSE");
    assert_eq!(settlement["success"], false);
    assert_eq!(settlement["status"], "failed");
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
}

#[tokio::test]
async fn settlement_still_pending_at_the_deadline_is_unconfirmed_and_the_authorization_burned() {
    let rig = OkxRig::start("");
    set_mode(&rig.okx, json!({"settle": "timeout-pending"})).await;
    let url = rig.gateway.url("/api/before");
    let payment = pay_exact(&accepted(&url).await);
    let started = Instant::now();
    let (status, settlement, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "settlement_unconfirmed");
    let settlement = settlement.expect("a receipt naming the transaction");
    assert_eq!(settlement["success"], false);
    assert!(
        settlement["transaction"]
            .as_str()
            .unwrap()
            .starts_with("0x"),
        "{settlement}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "bounded by settle_poll_deadline"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
    // The transaction may still land: the same authorization is never accepted again.
    let (again, _, body) = paid_get(&url, &payment).await;
    assert_eq!(again, 402);
    assert_eq!(body["error"], "payment_already_used");
    assert_eq!(rig.calls().await["settle"], 1);
}

#[tokio::test]
async fn payment_processing_and_onchain_error_are_unknown_outcomes_not_refusals() {
    let rig = OkxRig::start("");
    for mode in ["processing", "onchain_error"] {
        set_mode(&rig.okx, json!({"settle": mode})).await;
        let url = rig.gateway.url("/api/data");
        let payment = pay_exact(&accepted(&url).await);
        let (status, settlement, body) = paid_get(&url, &payment).await;
        assert_eq!(status, 504, "{mode}: {body}");
        assert_eq!(body["error"], "settlement_unconfirmed", "{mode}");
        assert!(body.get("ok").is_none(), "{mode}: content withheld");
        assert_eq!(settlement.expect("a receipt")["success"], false);
        // The first transfer may still land: never accepted again.
        set_mode(&rig.okx, json!({"settle": "normal"})).await;
        let (again, _, body) = paid_get(&url, &payment).await;
        assert_eq!(again, 402, "{mode}");
        assert_eq!(body["error"], "payment_already_used", "{mode}");
    }
}

#[tokio::test]
async fn refused_settlement_is_a_402_with_the_reason_and_no_content() {
    let rig = OkxRig::start("");
    set_mode(&rig.okx, json!({"settle": "failed"})).await;
    let (status, settlement, body) = rig.pay("/api/before").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_balance");
    assert_eq!(settlement.unwrap()["success"], false);
    assert_eq!(upstream_hits(&rig.upstream).await, 0);

    // after-success: the upstream answered, but its body is withheld
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_balance");
    assert!(body.get("ok").is_none(), "upstream body leaked: {body}");
}

#[tokio::test]
async fn refused_verification_is_a_402_with_the_reason_without_upstream() {
    let rig = OkxRig::start("");
    set_mode(&rig.okx, json!({"verify": "invalid"})).await;
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_balance");
    // A business error code whose message is a payment reason is a refusal too.
    set_mode(&rig.okx, json!({"verify": "refuse"})).await;
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "nonce_used");
    assert!(
        !body["message"].as_str().unwrap().contains("30001"),
        "no facilitator internals: {body}"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
    assert_eq!(rig.calls().await["settle"], 0);
}

#[tokio::test]
async fn batch_payment_signed_by_a_session_key_is_served_at_once() {
    let rig = OkxRig::start("");
    let url = rig.gateway.url("/api/batch");
    let offered = accepted(&url).await;
    assert_eq!(offered["scheme"], "aggr_deferred");
    assert_eq!(offered["amount"], "1000");
    assert!(offered["extra"].get("sessionCert").is_none());
    let cert = session_cert(AA_ACCOUNT);
    let (payment, sent) = pay_with_session_key(&offered, &cert);
    let (status, settlement, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.unwrap();
    assert_eq!(settlement["success"], true);
    assert_eq!(settlement["status"], "success");
    assert_eq!(settlement["transaction"], "", "batched: no transaction yet");
    assert_eq!(settlement["payer"], AA_ACCOUNT);
    assert_eq!(settlement["network"], "eip155:196");

    let settle = rig.last("settle").await;
    assert_eq!(
        settle["paymentPayload"], sent,
        "the payment, sessionCert included, is forwarded untouched"
    );
    assert_eq!(
        settle["paymentPayload"]["accepted"]["extra"]["sessionCert"],
        cert
    );
    assert!(
        settle["paymentRequirements"]["extra"]
            .get("sessionCert")
            .is_none(),
        "requirements come from configuration"
    );
    assert_eq!(settle["paymentRequirements"]["scheme"], "aggr_deferred");
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
}

#[tokio::test]
async fn batch_payment_is_still_matched_on_every_declared_field() {
    let rig = OkxRig::start("");
    let url = rig.gateway.url("/api/batch");
    let offered = accepted(&url).await;
    let mut lowered = offered.clone();
    lowered["amount"] = json!("1");
    let (payment, _) = pay_with_session_key(&lowered, &session_cert(AA_ACCOUNT));
    let (status, _, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "no_matching_requirements");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("accepted.amount"),
        "{body}"
    );

    // A key the route declares under `extra` must match; keys a client adds are its own.
    let mut extra = offered.clone();
    extra["extra"]["version"] = json!("9");
    let (payment, _) = pay_with_session_key(&extra, &session_cert(AA_ACCOUNT));
    let (status, _, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 402);
    assert!(
        body["message"].as_str().unwrap().contains("extra.version"),
        "{body}"
    );

    // A certificate for another account: only the facilitator can tell, and it refuses.
    let (payment, _) = pay_with_session_key(&offered, &session_cert(OTHER));
    let (status, _, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "invalid_signature");
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
    assert_eq!(rig.calls().await["settle"], 0);
}

#[tokio::test]
async fn refused_credentials_are_a_502_and_a_log_line_naming_the_cause() {
    // The gateway's readiness probe (`/supported`) signs its requests too: it runs once at
    // start-up, and that probe is waited for, so that the failures counted below are the paid
    // requests' alone.
    let rig = OkxRig::edited("", OKX_ROUTES, |config| {
        config.replace("[admin]\n", "[admin]\nprobe_interval = \"1h\"\n")
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while rig.calls().await["supported"].as_u64().unwrap_or(0) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the start-up probe reaches the facilitator");
    let cases = [
        (json!({"secret": "rotated-secret"}), json!({}), "50113"),
        (
            json!({"passphrase": "rotated-passphrase"}),
            json!({}),
            "50105",
        ),
        (json!({"key": "rotated-key"}), json!({}), "50111"),
        (json!({}), json!({"skewMs": 120_000}), "50112"),
    ];
    let okx = format!("http://127.0.0.1:{}", rig.okx.port);
    for (creds, mode, code) in cases {
        post_json(format!("{okx}/__reset"), json!({})).await;
        post_json(
            format!("{okx}/__creds"),
            json!({"key": OKX_KEY, "secret": OKX_SECRET, "passphrase": OKX_PASSPHRASE}),
        )
        .await;
        post_json(format!("{okx}/__creds"), creds).await;
        set_mode(&rig.okx, mode).await;
        let (status, _, body) = rig.pay("/api/data").await;
        assert_eq!(status, 502, "{code}: {body}");
        assert_eq!(body["error"], "facilitator_credentials");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("refused the gateway's credentials"),
            "{message}"
        );
        for secret in [OKX_KEY, OKX_SECRET, OKX_PASSPHRASE] {
            assert!(!message.contains(secret));
        }
        assert_eq!(control(&rig.okx, "/__auth_failures").await, json!([code]));
        let log = rig.gateway.log();
        assert!(
            log.contains("OKX refused the gateway's credentials")
                && log.contains(&format!("OKX code {code}")),
            "{code}: {log}"
        );
    }
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
}

#[tokio::test]
async fn rate_limited_verification_is_retried_and_settlement_is_not() {
    let rig = OkxRig::start("");
    set_mode(&rig.okx, json!({"verify": "ratelimit:2"})).await;
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rig.calls().await["verify"], 3, "two 429s, then the answer");

    set_mode(&rig.okx, json!({"verify": "ratelimit"})).await;
    let started = Instant::now();
    let (status, _, body) = rig.pay("/api/data").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "facilitator_rate_limited");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded retries"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, 1);

    set_mode(&rig.okx, json!({"verify": "normal", "settle": "ratelimit"})).await;
    let settles = rig.calls().await["settle"].as_u64().unwrap();
    let (status, _, body) = rig.pay("/api/before").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "facilitator_rate_limited");
    assert_eq!(
        rig.calls().await["settle"].as_u64().unwrap(),
        settles + 1,
        "settle is never retried"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
}

#[tokio::test]
async fn garbage_and_server_errors_are_502_without_upstream_and_numeric_codes_are_fine() {
    let rig = OkxRig::start("");
    for (mode, error) in [
        ("garbage", "facilitator_bad_response"),
        ("http500", "facilitator_error"),
    ] {
        set_mode(&rig.okx, json!({"verify": mode})).await;
        let (status, _, body) = rig.pay("/api/data").await;
        assert_eq!(status, 502, "{mode}");
        assert_eq!(body["error"], error);
    }
    assert_eq!(upstream_hits(&rig.upstream).await, 0);
    set_mode(
        &rig.okx,
        json!({"verify": "numeric-code", "settle": "numeric-code"}),
    )
    .await;
    let (status, _, _) = rig.pay("/api/data").await;
    assert_eq!(status, 200, "`code: 0` as a number is success too");
}

#[tokio::test]
async fn legacy_api_settles_with_chain_index_and_reports_the_tx_hash() {
    // The legacy API predates batch payments: the exact routes only.
    let exact_routes = OKX_ROUTES
        .split("[[routes]]\nmatch = \"GET /api/batch\"")
        .next()
        .unwrap();
    let rig = OkxRig::with("api = \"legacy\"", exact_routes);
    let (status, settlement, body) = rig.pay("/api/sync").await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.unwrap();
    assert_eq!(settlement["success"], true);
    assert!(
        settlement["transaction"]
            .as_str()
            .unwrap()
            .starts_with("0x"),
        "txHash becomes transaction"
    );
    assert_eq!(settlement["network"], "eip155:196");

    let settle = rig.last("settle").await;
    assert_eq!(settle["x402Version"], 1);
    assert_eq!(settle["chainIndex"], "196");
    assert_eq!(settle["syncSettle"], true);
    assert_eq!(settle["paymentPayload"]["chainIndex"], "196");
    assert!(settle["paymentPayload"].get("network").is_none());
    let requirements = &settle["paymentRequirements"];
    assert_eq!(requirements["maxAmountRequired"], "10000");
    assert_eq!(requirements["resource"], rig.gateway.url("/api/sync"));
    assert_eq!(requirements["payTo"], PAY_TO);
    assert!(requirements.get("amount").is_none());

    set_mode(&rig.okx, json!({"settle": "failed"})).await;
    let (status, _, body) = rig.pay("/api/before").await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_balance");
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
}

#[tokio::test]
async fn a_route_on_a_network_okx_does_not_offer_stops_start_up_naming_it() {
    let okx = okx_emulator(&[]);
    let config = vendor_config(
        free_port(),
        9,
        &okx_facilitator(okx.port, ""),
        "[[routes]]\nmatch = \"GET /base\"\nprice = \"$0.01\"\nnetwork = \"eip155:8453\"\nasset = \"USDC\"\n",
    );
    let (ok, stderr) = run_expecting_exit(&config);
    assert!(!ok);
    assert!(
        stderr.contains("route `GET /base` takes `exact` payments on `eip155:8453`, which facilitator `okx` does not offer"),
        "{stderr}"
    );
    assert!(stderr.contains("exact on eip155:196"), "{stderr}");
}

#[tokio::test]
async fn a_reload_onto_a_network_okx_does_not_offer_is_refused_and_the_old_routes_keep_serving() {
    let rig = OkxRig::start("");
    let path = rig.gateway.config_path();
    let original = std::fs::read_to_string(path).unwrap();
    let with_base = format!(
        "{original}[[routes]]\nmatch = \"GET /base\"\nprice = \"$0.01\"\nnetwork = \"eip155:8453\"\nasset = \"USDC\"\n"
    );
    std::fs::write(path, with_base).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rig.gateway.log().contains("configuration reload refused") {
        assert!(
            Instant::now() < deadline,
            "no refusal logged: {}",
            rig.gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = rig.gateway.log();
    assert!(
        log.contains("which facilitator `okx` does not offer"),
        "{log}"
    );
    // The old configuration serves on: its route is priced, the refused one is not.
    let r = http()
        .get(rig.gateway.url("/api/data"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let r = http().get(rig.gateway.url("/base")).send().await.unwrap();
    assert_ne!(r.status(), 402, "the refused route must not be live");
}

#[tokio::test]
async fn an_okx_settlement_moves_the_token_on_a_real_chain() {
    // X Layer's chain id with Circle's FiatTokenV2_2 named like USD₮0 (its EIP-712 version is "2").
    let chain = local_chain(196, "USD\u{20AE}0");
    let okx = okx_emulator(&[
        "--rpc",
        &chain.rpc,
        "--signer",
        &chain.signer,
        "--chain-id",
        "196",
    ]);
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let port = free_port();
    let routes = format!(
        "[[routes]]\nmatch = \"GET /api/data\"\nprice = \"$0.01\"\npay_to = \"{}\"\nsync_settle = true\n\
         [assets.\"eip155:196\".USDT0]\naddress = \"{}\"\ndecimals = 6\nname = \"USD\u{20AE}0\"\nversion = \"2\"\n",
        chain.pay_to, chain.token
    );
    let gateway = vendor_gateway(&vendor_config(
        port,
        upstream.port,
        &okx_facilitator(okx.port, ""),
        &routes,
    ))
    .start();
    let url = gateway.url("/api/data");
    let payment = pay_exact_with(&accepted(&url).await, &chain.buyer.1);
    let (status, settlement, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.unwrap();
    assert_eq!(settlement["status"], "success");
    let tx = settlement["transaction"].as_str().unwrap();
    assert_transfer_on_chain(
        &chain.rpc,
        tx,
        &chain.token,
        &chain.buyer.0,
        &chain.pay_to,
        10_000,
    )
    .await;

    // Paying again with the same authorization is refused by the gateway before OKX is asked.
    let (status, _, body) = paid_get(&url, &payment).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "payment_already_used");
}

/// The latest journal state of each payment, through `x402-gateway receipts`.
fn receipts(journal: &std::path::Path) -> Vec<Value> {
    let out = std::process::Command::new(gateway_bin())
        .args(["receipts", "--format", "json", "--journal"])
        .arg(journal)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_pending_okx_settlement_is_reconciled_in_the_journal_through_settle_status() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    let port = free_port();
    let journal = write_config("").with_file_name("journal.jsonl");
    let config = format!(
        "{}[journal]\npath = \"{}\"\nreconcile_interval = \"300ms\"\n",
        vendor_config(
            port,
            upstream.port,
            &okx_facilitator(okx.port, ""),
            OKX_ROUTES
        ),
        journal.display()
    );
    let gateway = vendor_gateway(&config).start();
    let url = gateway.url("/api/data");
    let (status, settlement, body) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.unwrap();
    assert_eq!(settlement["status"], "pending");
    let tx = settlement["transaction"].as_str().unwrap().to_string();

    // The emulator reports the transaction pending once, then confirmed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = receipts(&journal);
        assert_eq!(rows.len(), 1, "{rows:?}");
        if rows[0]["state"] == "settled" {
            assert_eq!(rows[0]["transaction"], tx.as_str());
            break;
        }
        assert_eq!(rows[0]["state"], "pending", "{rows:?}");
        assert!(
            Instant::now() < deadline,
            "never reconciled: {}",
            gateway.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(control(&okx, "/__last/status").await["txHash"], tx.as_str());
}

#[tokio::test]
async fn refused_credentials_at_start_up_stop_it_with_the_cause() {
    let okx = okx_emulator(&[]);
    let facilitator =
        okx_facilitator(okx.port, "").replace("${OKX_PASSPHRASE}", "not-the-passphrase");
    let (ok, stderr) = run_expecting_exit(&vendor_config(free_port(), 9, &facilitator, OKX_ROUTES));
    assert!(!ok);
    assert!(
        stderr.contains("facilitator `okx` refused the gateway's credentials (OKX code 50105"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-passphrase") && !stderr.contains(OKX_SECRET),
        "{stderr}"
    );
}

#[tokio::test]
async fn unreachable_okx_at_start_up_is_a_warning_and_payments_get_502() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let port = free_port();
    let okx = ClosedPort::new();
    let config = vendor_config(
        port,
        upstream.port,
        &okx_facilitator(okx.port, ""),
        OKX_ROUTES,
    );
    let gateway = vendor_gateway(&config).start();
    let url = gateway.url("/api/data");
    let (status, _, body) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "facilitator_unavailable");
    assert_eq!(upstream_hits(&upstream).await, 0);
    assert!(gateway
        .log()
        .contains("could not be asked what it supports"));
}

#[tokio::test]
async fn the_emulator_authenticates_like_okx() {
    use x402_gateway::facilitator::{okx_signature, okx_timestamp};
    let okx = okx_emulator(&[]);
    let base = format!("http://127.0.0.1:{}", okx.port);
    let path = "/api/v6/pay/x402/supported";
    let send = |headers: Vec<(&'static str, String)>| {
        let mut r = http().get(format!("{base}{path}"));
        for (k, v) in headers {
            r = r.header(k, v);
        }
        async move {
            let r = r.send().await.unwrap();
            let body: Value = r.json().await.unwrap();
            body["code"].as_str().unwrap().to_string()
        }
    };
    let signed = |secret: &str, passphrase: &str, ts: String| {
        vec![
            ("OK-ACCESS-KEY", OKX_KEY.to_string()),
            (
                "OK-ACCESS-SIGN",
                okx_signature(secret, &ts, "GET", path, ""),
            ),
            ("OK-ACCESS-TIMESTAMP", ts),
            ("OK-ACCESS-PASSPHRASE", passphrase.to_string()),
        ]
    };
    let now = || okx_timestamp(std::time::SystemTime::now());
    assert_eq!(send(signed(OKX_SECRET, OKX_PASSPHRASE, now())).await, "0");
    assert_eq!(send(vec![]).await, "50103");
    let mut no_sign = signed(OKX_SECRET, OKX_PASSPHRASE, now());
    no_sign.remove(1);
    assert_eq!(send(no_sign).await, "50106");
    assert_eq!(send(signed("wrong", OKX_PASSPHRASE, now())).await, "50113");
    assert_eq!(send(signed(OKX_SECRET, "wrong", now())).await, "50105");
    let stale = okx_timestamp(std::time::SystemTime::now() - Duration::from_secs(120));
    assert_eq!(
        send(signed(OKX_SECRET, OKX_PASSPHRASE, stale)).await,
        "50112"
    );
}
