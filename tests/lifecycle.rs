//! Where money goes wrong, tried from outside against the real binary: an upstream speaking raw
//! HTTP/1.1 (1xx before its final status, 101 upgrades, dropped connections) and a facilitator
//! giving ambiguous or lying answers. Each test asserts what moved: settle calls, upstream hits,
//! the receipt, the journal, and whether the authorization can be spent again.

mod common;

use common::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An upstream written against the socket, so that it can send what frameworks send: `100
/// Continue` and `103 Early Hints` before the final status, `101` with a tunnel, or nothing.
struct RawUpstream {
    port: u16,
    hits: Arc<AtomicU64>,
    /// A permit for each tunnel the upstream saw closed by the gateway.
    tunnels_closed: Arc<tokio::sync::Semaphore>,
}

fn response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

impl RawUpstream {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let tunnels_closed = Arc::new(tokio::sync::Semaphore::new(0));
        let closed = tunnels_closed.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let counter = counter.clone();
                let closed = closed.clone();
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut stream).await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let ok = response("200 OK", r#"{"ok":true}"#);
                        let reply = match path.rsplit('/').next().unwrap_or("") {
                            "100-500" => format!(
                                "HTTP/1.1 100 Continue\r\n\r\n{}",
                                response("500 Internal Server Error", r#"{"error":"boom"}"#)
                            ),
                            "103-200" => format!(
                                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n{ok}"
                            ),
                            "100-103-404" => format!(
                                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n{}",
                                response("404 Not Found", r#"{"error":"missing"}"#)
                            ),
                            "500" => response("500 Internal Server Error", r#"{"error":"boom"}"#),
                            "drop" => return,
                            "upgrade" => {
                                let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                                if stream.write_all(head.as_bytes()).await.is_err() {
                                    return;
                                }
                                let mut buf = [0u8; 256];
                                while let Ok(n) = stream.read(&mut buf).await {
                                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                                closed.add_permits(1);
                                return;
                            }
                            _ => ok,
                        };
                        if stream.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            hits,
            tunnels_closed,
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until the gateway has closed one more tunnel to this upstream.
    async fn tunnel_closed(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.tunnels_closed.acquire())
            .await
            .expect("the gateway closes the tunnel to the upstream")
            .expect("the semaphore is never closed")
            .forget();
    }
}

struct Bed {
    upstream: RawUpstream,
    facilitator: Proc,
    _gateway: TestGateway,
    port: u16,
    journal: PathBuf,
    http: reqwest::Client,
}

const ROUTES: &str = r#"
[[routes]]
match = "GET /up/**"
price = "$0.01"
settle = "before"
[[routes]]
match = "GET /routekeys"
pay_to = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
max_timeout_seconds = 60
accepts = [ { price = "$0.03" } ]
"#;

impl Bed {
    async fn start() -> Self {
        let upstream = RawUpstream::start().await;
        let facilitator = node("facilitator.mjs", &["--port", "0"]);
        let port = free_port();
        let dir = write_config("").parent().unwrap().to_path_buf();
        let journal = dir.join("journal.jsonl");
        let extra = format!("{ROUTES}[journal]\npath = \"{}\"\n", journal.display());
        let gateway =
            TestGateway::builder(&config(port, upstream.port, facilitator.port, "", &extra))
                .start();
        Self {
            upstream,
            facilitator,
            _gateway: gateway,
            port,
            journal,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn control(&self, path: &str) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{}{path}", self.facilitator.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn mode(&self, modes: Value) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/__mode", self.facilitator.port))
            .json(&modes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// (verify, settle) calls so far.
    async fn calls(&self) -> (u64, u64) {
        let v = self.control("/__calls").await;
        (v["verify"].as_u64().unwrap(), v["settle"].as_u64().unwrap())
    }

    async fn paid_get(&self, path: &str, payment: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("PAYMENT-SIGNATURE", payment)
            .send()
            .await
            .unwrap()
    }

    fn journal_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn receipt(r: &reqwest::Response) -> Option<Value> {
    r.headers()
        .get("payment-response")
        .map(|v| decode_b64_json(v.to_str().unwrap()))
}

#[tokio::test]
async fn informational_responses_never_settle_and_a_failure_after_them_is_not_charged() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/100-500")).await;
    let r = bed.paid_get("/paid/100-500", &payment).await;
    assert_eq!(r.status(), 500);
    assert!(receipt(&r).is_none(), "no receipt for a failed response");
    assert_eq!(bed.calls().await, (1, 0), "verified, never settled");
    assert_eq!(bed.upstream.hits(), 1);

    let r = bed.paid_get("/paid/100-103-404", &payment).await;
    assert_eq!(r.status(), 404);
    assert!(receipt(&r).is_none());
    assert_eq!(bed.calls().await.1, 0);

    // Nothing was charged, so the same authorization still buys a request.
    let r = bed.paid_get("/paid/103-200", &payment).await;
    assert_eq!(r.status(), 200);
    let settlement = receipt(&r).expect("a receipt for the success");
    assert_eq!(settlement["success"], true);
    assert_eq!(bed.calls().await.1, 1, "settled once, on the final 200");
    let states: Vec<Value> = bed
        .journal_lines()
        .iter()
        .map(|l| l["state"].clone())
        .collect();
    assert_eq!(
        states,
        [
            "verified",
            "not_charged",
            "verified",
            "not_charged",
            "verified",
            "settled"
        ]
    );
    assert_eq!(bed.journal_lines()[1]["reason"], "upstream_status_500");
}

#[tokio::test]
async fn switching_protocols_is_settled_before_the_tunnel_opens() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/upgrade")).await;
    let mut stream = TcpStream::connect(("127.0.0.1", bed.port)).await.unwrap();
    let request = format!(
        "GET /paid/upgrade HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nPAYMENT-SIGNATURE: {payment}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .unwrap()
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("payment-response:"))
        .unwrap_or_else(|| panic!("no receipt on the 101: {head}"));
    let settlement = decode_b64_json(line.split_once(':').unwrap().1.trim());
    assert_eq!(settlement["success"], true);
    assert_eq!(bed.calls().await, (1, 1), "settled before the tunnel");
    stream.write_all(b"ping").await.unwrap();
    let mut echo = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping");
}

/// An upgrade request's head, as a WebSocket client sends it.
fn upgrade_request(path: &str, payment: Option<&str>) -> String {
    let payment = payment
        .map(|p| format!("PAYMENT-SIGNATURE: {p}\r\n"))
        .unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{payment}\r\n"
    )
}

/// Sends `bytes` into an open tunnel and reads them back from the echoing upstream.
async fn echo_through(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.unwrap();
    let mut echo = vec![0u8; bytes.len()];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo))
        .await
        .expect("the echo in time")
        .expect("the tunnel stays open");
    assert_eq!(echo, bytes);
}

#[tokio::test]
async fn free_upgrades_tunnel_both_ways_until_the_client_leaves() {
    let bed = Bed::start().await;
    // Many tunnels in a row, each with two messages each way and closed by the client.
    for round in 0..100 {
        let mut stream = TcpStream::connect(("127.0.0.1", bed.port)).await.unwrap();
        stream
            .write_all(upgrade_request("/free/upgrade", None).as_bytes())
            .await
            .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
            .await
            .unwrap()
            .expect("a response head");
        assert!(head.starts_with("HTTP/1.1 101"), "round {round}: {head}");
        let lower = head.to_ascii_lowercase();
        assert!(lower.contains("upgrade: websocket"), "{head}");
        assert!(lower.contains("connection: upgrade"), "{head}");
        assert!(!lower.contains("payment-response"), "{head}");
        echo_through(&mut stream, format!("ping {round}").as_bytes()).await;
        echo_through(&mut stream, &[0u8, 255, 13, 10, 13, 10]).await;
        // The client leaves: the gateway closes the tunnel to the upstream and ends the
        // client's connection.
        stream.shutdown().await.unwrap();
        bed.upstream.tunnel_closed().await;
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the connection ends")
            .unwrap();
        assert!(rest.is_empty(), "nothing after the tunnel: {rest:?}");
    }
    assert_eq!(bed.upstream.hits(), 100);
    assert_eq!(bed.calls().await, (0, 0));
}

#[tokio::test]
async fn a_paid_upgrade_whose_settlement_fails_opens_no_tunnel_and_charges_nothing() {
    let bed = Bed::start().await;
    bed.mode(json!({"settle": "invalid"})).await;
    let payment = pay_header_for(&bed.url("/paid/upgrade")).await;
    let mut stream = TcpStream::connect(("127.0.0.1", bed.port)).await.unwrap();
    stream
        .write_all(upgrade_request("/paid/upgrade", Some(&payment)).as_bytes())
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .unwrap()
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 402"), "{head}");
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("payment-response:"))
        .unwrap_or_else(|| panic!("the failed settlement is told: {head}"));
    let settlement = decode_b64_json(line.split_once(':').unwrap().1.trim());
    assert_eq!(settlement["success"], false);
    // The upstream's side of the tunnel is closed, never passed to the client.
    bed.upstream.tunnel_closed().await;
    assert_eq!(bed.calls().await, (1, 1));
    let last = bed.journal_lines().last().cloned().unwrap();
    assert_ne!(last["state"], "settled", "{last}");
}

#[tokio::test]
async fn a_paid_upgrade_the_upstream_declines_is_an_ordinary_answer_settled_on_its_head() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/plain")).await;
    let mut stream = TcpStream::connect(("127.0.0.1", bed.port)).await.unwrap();
    stream
        .write_all(upgrade_request("/paid/plain", Some(&payment)).as_bytes())
        .await
        .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .unwrap()
        .expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("upgrade:"), "{head}");
    let line = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("payment-response:"))
        .unwrap_or_else(|| panic!("no receipt: {head}"));
    assert_eq!(
        decode_b64_json(line.split_once(':').unwrap().1.trim())["success"],
        true
    );
    let body = read_framed_body(&mut stream, &head).await;
    assert_eq!(body, br#"{"ok":true}"#);
    assert_eq!(bed.calls().await, (1, 1));
    assert_eq!(bed.upstream.hits(), 1);
}

#[tokio::test]
async fn settlement_pending_is_resent_once_identically_then_answered_504_with_the_transaction() {
    let bed = Bed::start().await;
    bed.mode(json!({"settle": "pending500"})).await;
    let payment = pay_header_for(&bed.url("/paid")).await;
    let r = bed.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 504);
    let settlement = receipt(&r).expect("the receipt names the transaction");
    assert_eq!(settlement["success"], false);
    assert_eq!(settlement["errorReason"], "settlement_unconfirmed");
    let tx = settlement["transaction"].as_str().unwrap().to_string();
    assert!(tx.starts_with("0x") && tx.len() == 66, "{settlement}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "settlement_unconfirmed");
    assert!(body.get("ok").is_none(), "content withheld: {body}");
    let bodies = bed.control("/__bodies/settle").await;
    assert_eq!(bodies.as_array().unwrap().len(), 2, "resent exactly once");
    assert_eq!(bodies[0], bodies[1], "with the identical body");

    let lines = bed.journal_lines();
    let last = lines.last().unwrap();
    assert_eq!(last["state"], "pending");
    assert_eq!(last["reason"], "settlement_unconfirmed");
    assert_eq!(last["transaction"], tx.as_str());

    // The transfer may still land: the authorization is never accepted again.
    bed.mode(json!({"settle": "normal"})).await;
    let again = bed.paid_get("/paid", &payment).await;
    assert_eq!(again.status(), 402);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        "payment_already_used"
    );
    assert_eq!(bed.calls().await.1, 2);
}

#[tokio::test]
async fn settlement_pending_that_lands_on_the_resend_is_served() {
    let bed = Bed::start().await;
    bed.mode(json!({"settle": "pending500once"})).await;
    let payment = pay_header_for(&bed.url("/paid")).await;
    let r = bed.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 200);
    assert_eq!(receipt(&r).unwrap()["success"], true);
    assert_eq!(bed.calls().await.1, 2);
    assert_eq!(bed.journal_lines().last().unwrap()["state"], "settled");
}

#[tokio::test]
async fn a_5xx_is_never_a_success_and_a_contradicting_settlement_is_unknown() {
    let bed = Bed::start().await;
    bed.mode(json!({"verify": "http500valid"})).await;
    let payment = pay_header_for(&bed.url("/paid")).await;
    let r = bed.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 502);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "facilitator_error"
    );
    assert_eq!(
        bed.upstream.hits(),
        0,
        "an HTTP 500 `isValid: true` is not valid"
    );

    bed.mode(json!({"verify": "normal", "settle": "http500valid"}))
        .await;
    let payment = pay_header_for(&bed.url("/paid")).await;
    let r = bed.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 504);
    assert!(r.json::<Value>().await.unwrap().get("ok").is_none());

    for mode in ["otherpayer", "othernetwork", "otheramount", "http500"] {
        bed.mode(json!({"settle": mode})).await;
        let payment = pay_header_for(&bed.url("/paid")).await;
        let r = bed.paid_get("/paid", &payment).await;
        assert_eq!(r.status(), 504, "{mode}");
        let settlement = receipt(&r).expect("a receipt");
        assert_eq!(settlement["success"], false, "{mode}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "settlement_unconfirmed", "{mode}");
        assert!(body.get("ok").is_none(), "{mode}: content withheld");
        assert!(
            !body["message"].as_str().unwrap().contains("boom"),
            "no facilitator internals: {body}"
        );
        bed.mode(json!({"settle": "normal"})).await;
        let again = bed.paid_get("/paid", &payment).await;
        assert_eq!(again.status(), 402, "{mode}: burned");
        assert_eq!(
            bed.journal_lines().last().unwrap()["state"],
            "pending",
            "{mode}"
        );
    }
}

#[tokio::test]
async fn settling_up_front_makes_no_verify_call_and_always_sends_the_receipt() {
    let bed = Bed::start().await;
    let r = bed.http.get(bed.url("/up/ok")).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    assert_eq!(challenge["accepts"][0]["extra"]["paymentFlow"], "upfront");
    let paid = bed.http.get(bed.url("/paid")).send().await.unwrap();
    let challenge = decode_b64_json(paid.headers()["payment-required"].to_str().unwrap());
    assert!(challenge["accepts"][0]["extra"]
        .get("paymentFlow")
        .is_none());

    let payment = pay_header_for(&bed.url("/up/ok")).await;
    let r = bed.paid_get("/up/ok", &payment).await;
    assert_eq!(r.status(), 200);
    assert_eq!(receipt(&r).unwrap()["success"], true);
    assert_eq!(
        bed.calls().await,
        (0, 1),
        "the facilitator's /settle verifies"
    );

    // The upstream fails after the money moved: the buyer still gets the receipt.
    let payment = pay_header_for(&bed.url("/up/500")).await;
    let r = bed.paid_get("/up/500", &payment).await;
    assert_eq!(r.status(), 500);
    assert_eq!(receipt(&r).expect("receipt with the 500")["success"], true);

    let payment = pay_header_for(&bed.url("/up/drop")).await;
    let r = bed.paid_get("/up/drop", &payment).await;
    assert_eq!(r.status(), 502);
    let settlement = receipt(&r).expect("receipt with the gateway's 502");
    assert_eq!(settlement["success"], true);
    assert_eq!(bed.calls().await, (0, 3));

    let lines = bed.journal_lines();
    let reasons: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["state"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert!(
        reasons.contains(&("settled", "upstream_status_500")),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("settled", "upstream_failed")),
        "{reasons:?}"
    );
    let last = lines.last().unwrap();
    assert_eq!(last["transaction"], settlement["transaction"]);
}

#[tokio::test]
async fn route_level_keys_reach_each_accepts_entry_and_the_signed_payment() {
    let bed = Bed::start().await;
    let r = bed.http.get(bed.url("/routekeys")).send().await.unwrap();
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let offered = &challenge["accepts"][0];
    assert_eq!(offered["payTo"], OTHER);
    assert_eq!(offered["maxTimeoutSeconds"], 60);
    assert_eq!(offered["amount"], "30000");

    let payment = pay_header_for(&bed.url("/routekeys")).await;
    let r = bed.paid_get("/routekeys", &payment).await;
    assert_eq!(r.status(), 200);
    let settled = bed.control("/__last/settle").await;
    assert_eq!(settled["paymentRequirements"]["payTo"], OTHER);
    assert_eq!(
        settled["paymentPayload"]["payload"]["authorization"]["to"]
            .as_str()
            .unwrap()
            .to_ascii_lowercase(),
        OTHER.to_ascii_lowercase()
    );

    let path = write_config(&config(8402, 8080, 8081, "", ROUTES));
    let out = std::process::Command::new(gateway_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("GET /routekeys"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&format!("to {OTHER}")), "{line}");
}

#[tokio::test]
async fn a_client_may_add_keys_under_accepted_extra() {
    let bed = Bed::start().await;
    let r = bed.http.get(bed.url("/paid")).send().await.unwrap();
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let mut accepted: x402_gateway::x402::PaymentRequirements =
        serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    accepted.extra["clientHint"] = json!("wallet-v3");
    let payment = sign_v2(&accepted, |_| {});
    let r = bed.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // What the facilitator is asked to check comes from configuration, not from the client.
    let settled = bed.control("/__last/settle").await;
    assert!(settled["paymentRequirements"]["extra"]
        .get("clientHint")
        .is_none());
}

#[tokio::test]
async fn a_facilitator_refusal_is_told_as_a_code_and_a_fixed_message() {
    let bed = Bed::start().await;
    bed.mode(json!({"verify": "invalid"})).await;
    let payment = pay_header_for(&bed.url("/paid")).await;
    let r = bed.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 402);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "insufficient_funds");
    assert_eq!(
        body["message"],
        "the facilitator refused the payment: insufficient_funds"
    );
    assert_eq!(bed.upstream.hits(), 0);
}
