//! Every bad input gets a precise status and message, and none of them reaches the upstream.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use x402_gateway::x402::PaymentRequirements;

async fn requirements(rig: &Rig) -> PaymentRequirements {
    serde_json::from_value(rig.challenge("/paid").await["accepts"][0].clone()).unwrap()
}

/// Sends `header` as PAYMENT-SIGNATURE and returns (status, JSON body).
async fn send(rig: &Rig, header: &str) -> (u16, Value) {
    let r = rig
        .http
        .get(rig.url("/paid"))
        .header("PAYMENT-SIGNATURE", header)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn undecodable_payment_headers_get_400_with_what_is_wrong() {
    let rig = Rig::start().await;
    let cases: Vec<(String, &str)> = vec![
        ("%%%not-base64%%%".into(), "not valid base64"),
        (encode_plain("hello"), "not UTF-8 JSON"),
        (
            encode_b64_json(&json!({"x402Version": 2})),
            "missing field `accepted`",
        ),
        (
            encode_b64_json(&json!({"x402Version": 3})),
            "unsupported x402Version 3",
        ),
        (
            encode_b64_json(&json!({"accepted": {}})),
            "missing field `x402Version`",
        ),
        ("A".repeat(20_000), "more than the 16384 allowed"),
    ];
    for (header, expected) in cases {
        let (status, body) = send(&rig, &header).await;
        assert_eq!(status, 400, "{expected}");
        assert_eq!(body["error"], "invalid_payment_header");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("PAYMENT-SIGNATURE header cannot be read"),
            "{message}"
        );
        assert!(
            message.contains(expected),
            "{message} should say {expected}"
        );
    }
    assert_eq!(rig.upstream_hits().await, 0);
    assert_eq!(rig.facilitator_calls().await, (0, 0));
}

/// A signed payment whose nonce was then cut short.
fn with_short_nonce(header: &str) -> String {
    let mut payment = decode_b64_json(header);
    payment["payload"]["authorization"]["nonce"] = json!("0x01");
    encode_b64_json(&payment)
}

fn encode_plain(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn payments_that_do_not_match_the_configuration_are_refused_before_any_call() {
    let rig = Rig::start().await;
    let honest = requirements(&rig).await;
    let mut lowered = honest.clone();
    lowered.amount = "5000".into();
    let mut elsewhere = honest.clone();
    elsewhere.pay_to = OTHER.into();
    let now = now();
    let cases: Vec<(String, &str, &str)> = vec![
        (
            sign_v2(&lowered, |_| {}),
            "no_matching_requirements",
            "accepted.amount is `5000`",
        ),
        (
            sign_v2(&honest, |a| a.value = "5000".into()),
            "invalid_exact_evm_authorization_value",
            "value is 5000 but the price is 10000",
        ),
        (
            sign_v2(&elsewhere, |_| {}),
            "no_matching_requirements",
            "accepted.payTo",
        ),
        (
            sign_v2(&honest, |a| a.to = OTHER.into()),
            "invalid_exact_evm_recipient_mismatch",
            OTHER,
        ),
        (
            sign_v2(&honest, |a| a.valid_before = (now - 1).to_string()),
            "invalid_exact_evm_payload_authorization_valid_before",
            "too soon",
        ),
        (
            sign_v2(&honest, |a| a.valid_after = (now + 600).to_string()),
            "invalid_exact_evm_payload_authorization_valid_after",
            "not valid before",
        ),
        (
            sign_v2(&honest, |a| a.from = OTHER.into()),
            "invalid_exact_evm_signature",
            "not by authorization.from",
        ),
        (
            with_short_nonce(&sign_v2(&honest, |_| {})),
            "invalid_payload",
            "authorization.nonce is malformed",
        ),
    ];
    for (header, reason, detail) in cases {
        let r = rig
            .http
            .get(rig.url("/paid"))
            .header("PAYMENT-SIGNATURE", &header)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 402, "{reason}");
        let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
        assert_eq!(
            challenge["error"], reason,
            "the v2 challenge names the reason"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], reason);
        assert!(body["message"].as_str().unwrap().contains(detail), "{body}");
    }
    assert_eq!(rig.upstream_hits().await, 0);
    assert_eq!(rig.facilitator_calls().await, (0, 0));
}

#[tokio::test]
async fn a_facilitator_refusal_is_a_402_with_its_reason() {
    let rig = Rig::start().await;
    rig.facilitator_mode(json!({"verify": "invalid"})).await;
    let header = rig.pay_header("/paid").await;
    let (status, body) = send(&rig, &header).await;
    assert_eq!(status, 402);
    assert_eq!(body["error"], "insufficient_funds");
    assert_eq!(rig.upstream_hits().await, 0);
    assert_eq!(rig.facilitator_calls().await, (1, 0));
    // The refusal released the authorization: once the facilitator agrees, it pays.
    rig.facilitator_mode(json!({"verify": "normal"})).await;
    assert_eq!(send(&rig, &header).await.0, 200);
}

#[tokio::test]
async fn facilitator_failures_are_502_or_504_in_bounded_time_without_upstream() {
    let rig = Rig::start().await;
    for (mode, status, code) in [
        ("http500", 502, "facilitator_error"),
        ("garbage", 502, "facilitator_bad_response"),
        ("wrongshape", 502, "facilitator_bad_response"),
        ("hang", 504, "facilitator_timeout"),
    ] {
        rig.facilitator_mode(json!({"verify": mode})).await;
        let header = rig.pay_header("/paid").await;
        let started = Instant::now();
        let (got, body) = send(&rig, &header).await;
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, code),
            "{mode}: {body}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{mode} took {:?}",
            started.elapsed()
        );
        assert!(body["message"].as_str().unwrap().len() > 10);
    }
    assert_eq!(rig.upstream_hits().await, 0);
}

#[tokio::test]
async fn an_unreachable_facilitator_is_a_502() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let port = free_port();
    let closed = ClosedPort::new();
    let _gateway = TestGateway::builder(&config(port, upstream.port, closed.port, "", "")).start();
    let http = reqwest::Client::new();
    let payment = pay_header_for(&format!("http://127.0.0.1:{port}/paid")).await;
    let r = http
        .get(format!("http://127.0.0.1:{port}/paid"))
        .header("PAYMENT-SIGNATURE", payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "facilitator_unavailable"
    );
    let hits: Value = reqwest::get(format!("http://127.0.0.1:{}/__hits", upstream.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(hits["hits"], 0);
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_charges_nothing() {
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let closed = ClosedPort::new();
    let _gateway =
        TestGateway::builder(&config(port, closed.port, facilitator.port, "", "")).start();
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://127.0.0.1:{port}/free/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "upstream_unavailable"
    );

    let payment = pay_header_for(&format!("http://127.0.0.1:{port}/paid")).await;
    let r = http
        .get(format!("http://127.0.0.1:{port}/paid"))
        .header("PAYMENT-SIGNATURE", payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("payment-response").is_none());
    let calls: Value = reqwest::get(format!("http://127.0.0.1:{}/__calls", facilitator.port))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        calls["settle"], 0,
        "nobody pays for a response that never came"
    );
}
