//! Request-dependent prices over real sockets: the challenge of each request carries the price its
//! rules compute, and a payment for any other price is refused before the facilitator and the
//! upstream.

mod common;
use common::*;
use serde_json::Value;
use x402_gateway::x402::PaymentRequirements;

const RULES: &str = r#"
[[routes]]
match = "* /report/:tier"
price = "$0.01"
[[routes.price_rules]]
path_param = "tier"
equals = "full"
price = "$0.03"
[[routes.price_rules]]
query = "format"
equals = "pdf"
price = "$0.05"
[[routes.price_rules]]
header = "X-Model"
equals = ["large", "xl"]
price = "$0.07"
[[routes.price_rules]]
body_over = 1024
price = "$0.09"
"#;

/// What `request` is asked to pay: the first option of its 402 challenge.
async fn asked(request: reqwest::RequestBuilder) -> PaymentRequirements {
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 402);
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    serde_json::from_value(challenge["accepts"][0].clone()).unwrap()
}

#[tokio::test]
async fn each_rule_kind_sets_the_price_in_the_challenge_and_in_the_payment() {
    let rig = Rig::with("", RULES).await;
    let big = "x".repeat(2000);
    let cases: Vec<(&str, reqwest::RequestBuilder, &str)> = vec![
        ("base", rig.http.get(rig.url("/report/summary")), "10000"),
        ("path", rig.http.get(rig.url("/report/full")), "30000"),
        (
            "query",
            rig.http.get(rig.url("/report/summary?format=pdf")),
            "50000",
        ),
        (
            "header",
            rig.http
                .get(rig.url("/report/summary"))
                .header("X-Model", "xl"),
            "70000",
        ),
        (
            "body",
            rig.http.post(rig.url("/report/summary")).body(big.clone()),
            "90000",
        ),
        (
            "small body",
            rig.http
                .post(rig.url("/report/summary"))
                .body("x".repeat(100)),
            "10000",
        ),
    ];
    for (name, request, amount) in cases {
        assert_eq!(asked(request).await.amount, amount, "{name}");
    }
    assert_eq!(rig.upstream_hits().await, 0);

    // The base price does not buy a request a rule prices higher: refused locally.
    let cheap = asked(rig.http.get(rig.url("/report/summary"))).await;
    let r = rig
        .http
        .get(rig.url("/report/full"))
        .header("PAYMENT-SIGNATURE", sign_v2(&cheap, |_| {}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let refusal = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    assert_eq!(
        refusal["accepts"][0]["amount"], "30000",
        "the refusal asks for this request's price"
    );
    let r = rig
        .http
        .post(rig.url("/report/summary"))
        .header("PAYMENT-SIGNATURE", sign_v2(&cheap, |_| {}))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(rig.upstream_hits().await, 0);
    assert_eq!(rig.facilitator_calls().await, (0, 0));

    // The rule's price buys the request, and that is what the facilitator settles.
    let pdf = asked(rig.http.get(rig.url("/report/summary?format=pdf"))).await;
    let r = rig
        .http
        .get(rig.url("/report/summary?format=pdf"))
        .header("PAYMENT-SIGNATURE", sign_v2(&pdf, |_| {}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("payment-response"));
    assert_eq!(rig.upstream_hits().await, 1);
    assert_eq!(rig.facilitator_calls().await, (1, 1));
    let settle = rig.facilitator_last("settle").await;
    assert_eq!(settle["paymentRequirements"]["amount"], "50000");

    // A large body paid at its tier's price goes through.
    let tier = asked(rig.http.post(rig.url("/report/summary")).body(big.clone())).await;
    let r = rig
        .http
        .post(rig.url("/report/summary"))
        .header("PAYMENT-SIGNATURE", sign_v2(&tier, |_| {}))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.upstream_hits().await, 2);
    assert_eq!(
        rig.facilitator_last("settle").await["paymentRequirements"]["amount"],
        "90000"
    );
}

#[tokio::test]
async fn a_repeated_parameter_pays_the_highest_price_of_the_route() {
    let rig = Rig::with("", RULES).await;
    let both = asked(
        rig.http
            .get(rig.url("/report/summary?format=csv&format=pdf")),
    )
    .await;
    assert_eq!(both.amount, "90000");
}

#[tokio::test]
async fn discovery_and_check_show_the_rules() {
    let rig = Rig::with("", RULES).await;
    let doc: Value = rig
        .http
        .get(rig.url("/.well-known/x402"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let report = doc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "* /report/:tier")
        .expect("the route is listed");
    let rules = report["priceRules"].as_array().unwrap();
    assert_eq!(rules.len(), 4);
    assert_eq!(rules[0]["when"]["pathParam"], "tier");
    assert_eq!(rules[1]["when"]["query"], "format");
    assert_eq!(rules[2]["when"]["header"], "x-model");
    assert_eq!(rules[3]["when"]["bodyOver"], 1024);
    assert_eq!(rules[3]["accepts"][0]["amount"], "90000");
    assert_eq!(rules[3]["prices"][0]["price"], "0.09");

    let config = config(free_port(), 9, 9, "", RULES);
    let path = write_config(&config);
    let out = std::process::Command::new(gateway_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for line in [
        "when path :tier = full: 30000 USDC (0.03)",
        "when query format = pdf: 50000 USDC (0.05)",
        "when header x-model = large | xl: 70000 USDC (0.07)",
        "when body over 1024 bytes: 90000 USDC (0.09)",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}
