//! The paid flow end to end: challenge, verify, proxy, settle, and what the upstream sees.

mod common;

use common::*;
use serde_json::{json, Value};
use x402_gateway::x402::PaymentRequirements;

#[tokio::test]
async fn unpaid_request_gets_a_dual_version_challenge_and_never_reaches_the_upstream() {
    let rig = Rig::start().await;
    let r = rig.http.get(rig.url("/paid?q=1")).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let expose = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        expose.contains("PAYMENT-REQUIRED") && expose.contains("PAYMENT-RESPONSE"),
        "{expose}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");
    let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let body: Value = r.json().await.unwrap();

    assert_eq!(v2["x402Version"], 2);
    assert_eq!(
        v2["resource"]["url"],
        format!("http://127.0.0.1:{}/paid?q=1", rig.gateway.port)
    );
    assert_eq!(v2["resource"]["description"], "paid data");
    assert_eq!(
        v2["accepts"][0],
        json!({"scheme":"exact","network":"eip155:84532","amount":"10000",
               "asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e","payTo":PAY_TO,
               "maxTimeoutSeconds":120,"extra":{"name":"USDC","version":"2"}})
    );
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["accepts"][0]["network"], "base-sepolia");
    assert_eq!(body["accepts"][0]["maxAmountRequired"], "10000");
    assert_eq!(body["accepts"][0]["resource"], v2["resource"]["url"]);
    assert_eq!(rig.upstream_hits().await, 0);
    assert_eq!(rig.facilitator_calls().await, (0, 0));
}

#[tokio::test]
async fn options_without_a_v1_name_stay_in_the_header_only() {
    let rig = Rig::start().await;
    let r = rig.http.get(rig.url("/multi")).send().await.unwrap();
    let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let body: Value = r.json().await.unwrap();
    assert_eq!(v2["accepts"].as_array().unwrap().len(), 2);
    assert_eq!(v2["accepts"][1]["network"], "eip155:196");
    assert_eq!(v2["accepts"][1]["extra"]["name"], "USD\u{20AE}0");
    assert_eq!(
        body["accepts"].as_array().unwrap().len(),
        1,
        "X Layer has no v1 network name"
    );
}

#[tokio::test]
async fn paid_request_is_verified_proxied_and_settled_with_a_payment_response() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid").await;
    let r = rig
        .http
        .get(rig.url("/paid?x=1"))
        .header("PAYMENT-SIGNATURE", &payment)
        .header("X-Payment-Payer", "0xspoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let settlement = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    let echo: Value = r.json().await.unwrap();
    assert_eq!(settlement["success"], true);
    assert_eq!(settlement["network"], "eip155:84532");
    assert!(settlement["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert_eq!(
        settlement["payer"],
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    );

    // What the upstream saw: no payment header, the verified payer, proxy headers, its own Host.
    assert_eq!(echo["path"], "/paid?x=1");
    let headers = &echo["headers"];
    assert!(headers.get("payment-signature").is_none());
    assert_eq!(
        headers["x-payment-payer"],
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    );
    assert_eq!(headers["x-payment-amount"], "10000");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-host"],
        format!("127.0.0.1:{}", rig.gateway.port)
    );
    assert_eq!(headers["host"], format!("127.0.0.1:{}", rig.upstream.port));
    assert_eq!(rig.upstream_hits().await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));

    // The facilitator got requirements rebuilt from configuration.
    let settle = rig.facilitator_last("settle").await;
    assert_eq!(settle["x402Version"], 2);
    assert_eq!(settle["paymentRequirements"]["amount"], "10000");
    assert_eq!(settle["paymentRequirements"]["payTo"], PAY_TO);
    assert_eq!(
        settle["paymentPayload"],
        decode_b64_json(&payment),
        "the payment is forwarded untouched"
    );
}

#[tokio::test]
async fn v1_clients_pay_with_x_payment_and_get_x_payment_response() {
    let rig = Rig::start().await;
    let body: Value = rig
        .http
        .get(rig.url("/paid"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payment = sign_v1(&body["accepts"][0]);
    let r = rig
        .http
        .get(rig.url("/paid"))
        .header("X-PAYMENT", payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("payment-response").is_none());
    let settlement = decode_b64_json(r.headers()["x-payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], true);
    let verify = rig.facilitator_last("verify").await;
    assert_eq!(verify["x402Version"], 1);
    assert_eq!(verify["paymentRequirements"]["network"], "base-sepolia");
    assert_eq!(verify["paymentRequirements"]["maxAmountRequired"], "10000");
    assert_eq!(verify["paymentRequirements"]["resource"], rig.url("/paid"));
}

#[tokio::test]
async fn replayed_payment_is_refused_without_upstream_hit() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid").await;
    let first = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let again = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 402);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["error"], "payment_already_used");
    assert_eq!(rig.upstream_hits().await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));
}

#[tokio::test]
async fn twenty_concurrent_copies_of_one_payment_buy_one_request() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid").await;
    let requests = (0..20).map(|_| {
        rig.http
            .get(rig.url("/paid"))
            .header("PAYMENT-SIGNATURE", &payment)
            .send()
    });
    let responses = futures::future::join_all(requests).await;
    let mut statuses: Vec<u16> = responses
        .iter()
        .map(|r| r.as_ref().unwrap().status().as_u16())
        .collect();
    statuses.sort();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 402, 409].contains(s)),
        "{statuses:?}"
    );
    assert_eq!(rig.upstream_hits().await, 1);
    assert_eq!(rig.facilitator_calls().await.1, 1, "settled once");
}

#[tokio::test]
async fn upstream_failure_costs_nothing_and_the_buyer_can_retry() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid").await;
    let failed = rig
        .http
        .get(rig.url("/paid/status/500"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    assert!(failed.headers().get("payment-response").is_none());
    let body: Value = failed.json().await.unwrap();
    assert_eq!(
        body["error"], "upstream failure",
        "the upstream's own error body is passed through"
    );
    assert_eq!(
        rig.facilitator_calls().await,
        (1, 0),
        "verified, never settled"
    );
    // The reservation was released: the same authorization still buys one request.
    let retry = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    assert_eq!(rig.facilitator_calls().await, (2, 1));
}

#[tokio::test]
async fn failed_settlement_answers_402_and_withholds_the_upstream_body() {
    let rig = Rig::start().await;
    rig.facilitator_mode(json!({"settle": "invalid"})).await;
    let payment = rig.pay_header("/paid").await;
    let r = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let settlement = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    assert_eq!(settlement["success"], false);
    assert_eq!(settlement["errorReason"], "insufficient_funds");
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("\"ok\":true"),
        "upstream body leaked: {text}"
    );
    assert!(text.contains("insufficient_funds"), "{text}");
    assert_eq!(rig.upstream_hits().await, 1);
}

#[tokio::test]
async fn settlement_error_from_the_facilitator_is_unconfirmed_without_content() {
    let rig = Rig::start().await;
    rig.facilitator_mode(json!({"settle": "http500"})).await;
    let payment = rig.pay_header("/paid").await;
    let r = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    // The facilitator may have settled: not "payment required", which would make the buyer pay
    // twice, but "unconfirmed" with a receipt to check.
    assert_eq!(r.status(), 504);
    assert!(r.headers().contains_key("payment-response"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "settlement_unconfirmed");
    // The outcome is unknown, so the authorization is never accepted again.
    rig.facilitator_mode(json!({"settle": "normal"})).await;
    let again = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 402);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "payment_already_used"
    );
}

#[tokio::test]
async fn settle_before_routes_settle_first_and_skip_the_upstream_when_it_fails() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/before").await;
    let r = rig
        .http
        .get(rig.url("/before"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        decode_b64_json(r.headers()["payment-response"].to_str().unwrap())["success"],
        true
    );
    let times: Value = rig
        .http
        .get(format!("http://127.0.0.1:{}/__times", rig.facilitator.port))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = rig.upstream_last().await;
    let settled_at = times["settle"]["answeredAt"]
        .as_u64()
        .expect("settle answered");
    assert!(
        settled_at <= last["receivedAt"].as_u64().unwrap(),
        "settled before the upstream call: {times} {last}"
    );

    rig.facilitator_mode(json!({"settle": "invalid"})).await;
    let payment = rig.pay_header("/before").await;
    let r = rig
        .http
        .get(rig.url("/before"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(
        rig.upstream_hits().await,
        1,
        "a failed settlement never reaches the upstream"
    );
}

/// The rig with two `[[facilitators]]`: `primary` at `primary_url`, whose fallback is the rig's
/// stub facilitator, and a journal whose lines `journal` reads.
async fn rig_with_fallback(primary_url: &str) -> (Rig, std::path::PathBuf) {
    let journal = write_config("")
        .parent()
        .expect("a temporary directory")
        .join("journal.jsonl");
    let primary = format!(
        "[[facilitators]]\nname = \"primary\"\nkind = \"x402\"\nurl = \"{primary_url}\"\ntimeout = \"2s\"\nnetworks = [\"eip155:84532\"]\nfallback = \"stub\"\n\
         [[facilitators]]\nname = \"stub\"\nkind = \"x402\"\nurl = \"http://127.0.0.1:"
    );
    let rig = Rig::edited(
        "networks = [\"eip155:84532\", \"eip155:196\"]",
        &format!("[journal]\npath = \"{}\"\n", journal.display()),
        |config| {
            let single = "[facilitator]\nkind = \"x402\"\nurl = \"http://127.0.0.1:";
            assert!(config.contains(single), "{config}");
            config.replacen(single, &primary, 1)
        },
    )
    .await;
    (rig, journal)
}

fn journal_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a journal line is JSON"))
        .collect()
}

#[tokio::test]
async fn settle_before_routes_settle_with_the_fallback_when_the_primary_is_unreachable() {
    // Nothing listens on the primary's port: the settle request never reaches it.
    let (rig, journal) = rig_with_fallback(&format!("http://127.0.0.1:{}", free_port())).await;
    let payment = rig.pay_header("/before").await;
    let r = rig
        .http
        .get(rig.url("/before"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let receipt = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true, "{receipt}");
    assert_eq!(
        rig.facilitator_calls().await,
        (0, 1),
        "settled once, on the fallback"
    );
    assert_eq!(rig.upstream_hits().await, 1);
    let lines = journal_lines(&journal);
    let last = lines.last().expect("journal lines");
    assert_eq!(last["state"], "settled", "{lines:?}");
    assert_eq!(
        last["facilitator"], "stub",
        "reconciliation must ask the facilitator that settled: {lines:?}"
    );
    assert_eq!(last["transaction"], receipt["transaction"]);
}

#[tokio::test]
async fn settle_before_routes_never_settle_again_on_the_fallback_when_the_primary_may_have() {
    // The primary is up but fails its settle (5xx, slow): it may have moved the money, so the
    // fallback is never asked.
    let primary = node("facilitator.mjs", &["--port", "0"]);
    let (rig, journal) = rig_with_fallback(&format!("http://127.0.0.1:{}", primary.port)).await;
    let primary_calls = || async {
        let calls: Value = rig
            .http
            .get(format!("http://127.0.0.1:{}/__calls", primary.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        calls["settle"].as_u64().unwrap()
    };
    let mode = |settle: &'static str| {
        let url = format!("http://127.0.0.1:{}/__mode", primary.port);
        let http = rig.http.clone();
        async move {
            let r = http
                .post(url)
                .json(&json!({ "settle": settle }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    for (settle, settles) in [("http500", 1), ("hang", 2)] {
        mode(settle).await;
        let payment = rig.pay_header("/before").await;
        let r = rig
            .http
            .get(rig.url("/before"))
            .header("PAYMENT-SIGNATURE", &payment)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 504, "{settle}: outcome unknown");
        assert_eq!(primary_calls().await, settles, "{settle}");
        assert_eq!(
            rig.facilitator_calls().await,
            (0, 0),
            "{settle}: the fallback is never asked to settle"
        );
        assert_eq!(rig.upstream_hits().await, 0, "{settle}");
        let lines = journal_lines(&journal);
        let last = lines.last().expect("journal lines");
        assert_eq!(last["state"], "pending", "{settle}: {lines:?}");
        assert_eq!(last["facilitator"], "primary", "{settle}: {lines:?}");
    }
}

#[tokio::test]
async fn large_uploads_stream_through_a_paid_route_intact() {
    let rig = Rig::start().await;
    let r = rig.http.post(rig.url("/upload")).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let v2 = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let requirements: PaymentRequirements =
        serde_json::from_value(v2["accepts"][0].clone()).unwrap();
    let body: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    use sha2::Digest;
    let digest = hex_lower(&sha2::Sha256::digest(&body));
    let r = rig
        .http
        .post(rig.url("/upload"))
        .header("PAYMENT-SIGNATURE", sign_v2(&requirements, |_| {}))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bodyBytes"], 8 * 1024 * 1024);
    assert_eq!(echo["bodySha256"], digest);
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn free_routes_and_unmatched_paths_proxy_like_a_plain_proxy() {
    let rig = Rig::start().await;
    let r = rig
        .http
        .get(rig.url("/free/x"))
        .header("X-Payment-Payer", "0xspoofed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert!(
        echo["headers"].get("x-payment-payer").is_none(),
        "a client cannot pose as a payer"
    );
    let r = rig.http.get(rig.url("/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Server-sent events arrive as a stream.
    let r = rig.http.get(rig.url("/free/sse")).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    assert_eq!(r.text().await.unwrap().matches("data: ").count(), 5);
    assert_eq!(rig.upstream_hits().await, 3);
}

#[tokio::test]
async fn unmatched_deny_answers_404_without_upstream() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let config = config(port, upstream.port, facilitator.port, "", "")
        .replace("unmatched = \"proxy\"", "unmatched = \"deny\"");
    let _gateway = TestGateway::builder(&config).start();
    let r = reqwest::get(format!("http://127.0.0.1:{port}/elsewhere"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "no_route");
    let hits: Value = reqwest::get(format!("http://127.0.0.1:{}/__hits", upstream.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hits["hits"], 0);
}

#[tokio::test]
async fn cors_preflights_reach_the_upstream_unpriced_and_other_options_requests_are_priced() {
    let rig = Rig::start().await;
    let preflight = rig
        .http
        .request(reqwest::Method::OPTIONS, rig.url("/paid/x"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "payment-signature")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200, "answered by the upstream");
    assert_eq!(rig.upstream_last().await["method"], "OPTIONS");
    assert_eq!(rig.upstream_hits().await, 1);
    // Without the preflight header, OPTIONS on a `*` route is a request like any other.
    let plain = rig
        .http
        .request(reqwest::Method::OPTIONS, rig.url("/paid/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 402);
    assert_eq!(rig.upstream_hits().await, 1);
}

/// `verify = "local"`: the gateway's own checks stand in for `/verify`, so a paid request is one
/// facilitator exchange (`/settle`); what the checks cannot see (the buyer's funds) is found at
/// `/settle`, after the upstream worked, and that answer is withheld and not charged.
#[tokio::test]
async fn verify_local_routes_settle_without_a_verify_call_and_withhold_what_does_not_settle() {
    let local = "[[routes]]\nmatch = \"GET /local\"\nprice = \"$0.01\"\nverify = \"local\"\n";
    let rig = Rig::with("", local).await;
    let payment = rig.pay_header("/local").await;
    let paid = |payment: String| {
        let http = rig.http.clone();
        let url = rig.url("/local");
        async move {
            http.get(url)
                .header("PAYMENT-SIGNATURE", payment)
                .send()
                .await
                .unwrap()
        }
    };
    let r = paid(payment.clone()).await;
    assert_eq!(r.status(), 200);
    let receipt = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], true);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(
        echo["headers"]["x-payment-payer"],
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    );
    assert_eq!(rig.upstream_hits().await, 1);
    assert_eq!(
        rig.facilitator_calls().await,
        (0, 1),
        "no /verify: the local checks stood in for it"
    );

    // A replay and an underpaying authorization are refused by the local checks alone.
    assert_eq!(paid(payment).await.status(), 402);
    let challenge = rig.http.get(rig.url("/local")).send().await.unwrap();
    let challenge = decode_b64_json(challenge.headers()["payment-required"].to_str().unwrap());
    let requirements: PaymentRequirements =
        serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let underpaid = sign_v2(&requirements, |a| a.value = "9999".into());
    let r = paid(underpaid).await;
    assert_eq!(r.status(), 402);
    assert_eq!(rig.upstream_hits().await, 1, "neither reached the upstream");
    assert_eq!(rig.facilitator_calls().await, (0, 1), "nor the facilitator");

    // Funds short at /settle: the upstream did the work (the trade-off), the buyer gets nothing
    // and is charged nothing.
    rig.facilitator_mode(json!({"settle": "invalid"})).await;
    let r = paid(rig.pay_header("/local").await).await;
    assert_eq!(r.status(), 402);
    let receipt = decode_b64_json(r.headers()["payment-response"].to_str().unwrap());
    assert_eq!(receipt["success"], false);
    let text = r.text().await.unwrap();
    assert!(
        !text.contains("\"ok\":true"),
        "upstream body leaked: {text}"
    );
    assert_eq!(rig.upstream_hits().await, 2);
    assert_eq!(rig.facilitator_calls().await, (0, 2));

    // Other routes of the same gateway still verify with the facilitator.
    rig.facilitator_mode(json!({"settle": "normal"})).await;
    let r = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", rig.pay_header("/paid").await)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.facilitator_calls().await, (1, 3));
}

/// Headers of the client's connection stay at the gateway on a paid (carried) request, and so do
/// the headers its `Connection` names; naming one of the gateway's own headers does not remove it.
#[tokio::test]
async fn a_paid_request_s_hop_by_hop_headers_do_not_reach_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid").await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", rig.gateway.port))
        .await
        .unwrap();
    let request = format!(
        "GET /paid HTTP/1.1\r\nHost: 127.0.0.1\r\nPAYMENT-SIGNATURE: {payment}\r\n\
         Connection: close, X-Secret, X-Payment-Payer\r\nX-Secret: for the gateway only\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway answers and closes")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let echo: Value = serde_json::from_str(body).expect("the upstream's echo");
    let headers = &echo["headers"];
    for name in ["x-secret", "keep-alive", "te", "proxy-connection"] {
        assert!(
            headers.get(name).is_none(),
            "{name} reached the upstream: {echo}"
        );
    }
    assert_eq!(
        headers["x-payment-payer"], "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        "the verified payer is the gateway's header, whatever the client's Connection says"
    );
    assert_eq!(rig.facilitator_calls().await, (1, 1));

    // A free route, proxied by Pingora, treats them alike.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", rig.gateway.port))
        .await
        .unwrap();
    let request = "GET /free/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close, X-Secret\r\n\
         X-Secret: for the gateway only\r\nKeep-Alive: timeout=5\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the gateway answers and closes")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
    let echo: Value = serde_json::from_str(body).expect("the upstream's echo");
    for name in ["x-secret", "keep-alive"] {
        assert!(
            echo["headers"].get(name).is_none(),
            "{name} reached the upstream: {echo}"
        );
    }
}
