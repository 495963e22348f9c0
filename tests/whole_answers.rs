//! Charging for whole answers (`settle_buffer`), tried from outside against the real binary: an
//! upstream written on a raw socket that declares a length and breaks off, sends a whole body, a
//! body longer than the bound, or a chunked stream it cuts after the head. Each test asserts what
//! moved: settle calls, upstream hits, the receipt, the journal, the metrics, and whether the
//! authorization can be spent again.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use x402_gateway::payment::{BODY_CUT, BODY_INCOMPLETE};

/// The bound the tests configure: bodies up to it are held, longer ones stream.
const BOUND: usize = 128 * 1024;
/// The length the lying upstream declares before it breaks off.
const DECLARED: usize = 100_000;
/// A body longer than [`BOUND`] (the lying one, [`DECLARED`], is within it).
const LARGE: usize = 200_000;

/// The body of `/paid/whole`: known bytes, so that the test sees it arrive intact.
fn whole_body() -> String {
    let mut body = String::from("{\"items\":[");
    for i in 0..200 {
        body.push_str(&format!("{i},"));
    }
    body.push_str("200]}");
    body
}

fn large_body() -> Vec<u8> {
    (0..LARGE).map(|i| b'a' + (i % 26) as u8).collect()
}

/// An upstream written against the socket, so that it can lie about its body.
struct LyingUpstream {
    port: u16,
    hits: Arc<AtomicU64>,
    /// `/paid/large`: the first part of the body was sent and the rest was held back until the
    /// facilitator had been asked to settle.
    settled_mid_body: Arc<AtomicBool>,
}

/// The facilitator's settle calls so far.
async fn settle_calls(facilitator_port: u16) -> u64 {
    let calls: Value = reqwest::get(format!("http://127.0.0.1:{facilitator_port}/__calls"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    calls["settle"].as_u64().unwrap()
}

impl LyingUpstream {
    async fn start(facilitator_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU64::new(0));
        let settled_mid_body = Arc::new(AtomicBool::new(false));
        let (counter, mid_body) = (hits.clone(), settled_mid_body.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (counter, mid_body) = (counter.clone(), mid_body.clone());
                tokio::spawn(async move {
                    while let Some(head) = read_head(&mut stream).await {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                        let json = "Content-Type: application/json";
                        match path.rsplit('/').next().unwrap_or("") {
                            // Declares 100000 bytes, sends a few, closes.
                            "cut" => {
                                let lie = format!(
                                    "HTTP/1.1 200 OK\r\n{json}\r\nContent-Length: {DECLARED}\r\n\r\n{{\"partial\":"
                                );
                                let _ = stream.write_all(lie.as_bytes()).await;
                                let _ = stream.shutdown().await;
                                return;
                            }
                            "whole" => {
                                let body = whole_body();
                                let reply = format!(
                                    "HTTP/1.1 200 OK\r\n{json}\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if stream.write_all(reply.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            // Longer than the bound: the head and a first part, then the rest
                            // only once the gateway has asked for the settlement (or 5 s passed:
                            // a gateway holding the body would wait for ever).
                            "large" => {
                                let body = large_body();
                                let head = format!(
                                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {LARGE}\r\n\r\n"
                                );
                                if stream.write_all(head.as_bytes()).await.is_err()
                                    || stream.write_all(&body[..1000]).await.is_err()
                                {
                                    return;
                                }
                                let _ = stream.flush().await;
                                let deadline = Instant::now() + Duration::from_secs(5);
                                while Instant::now() < deadline {
                                    if settle_calls(facilitator_port).await > 0 {
                                        mid_body.store(true, Ordering::SeqCst);
                                        break;
                                    }
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                if stream.write_all(&body[1000..]).await.is_err() {
                                    return;
                                }
                            }
                            // A chunked stream: a first chunk, then the connection goes.
                            "chunked-cut" => {
                                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
                                let _ = stream.write_all(head.as_bytes()).await;
                                let _ = stream.flush().await;
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                let _ = stream.shutdown().await;
                                return;
                            }
                            _ => {
                                let reply = format!(
                                    "HTTP/1.1 404 Not Found\r\n{json}\r\nContent-Length: 2\r\n\r\n{{}}"
                                );
                                if stream.write_all(reply.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            port,
            hits,
            settled_mid_body,
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

struct Bed {
    upstream: LyingUpstream,
    facilitator: Proc,
    gateway: TestGateway,
    journal: PathBuf,
    http: reqwest::Client,
}

impl Bed {
    async fn start() -> Self {
        let facilitator = node("facilitator.mjs", &["--port", "0"]);
        let upstream = LyingUpstream::start(facilitator.port).await;
        let port = free_port();
        let dir = write_config("").parent().unwrap().to_path_buf();
        let journal = dir.join("journal.jsonl");
        // A route that turns holding off: its answers are proxied and settled on the head.
        let extra = format!(
            "[[routes]]\nmatch = \"GET /streamed/**\"\nprice = \"$0.01\"\nsettle_buffer = 0\n\
             [journal]\npath = \"{}\"\n",
            journal.display()
        );
        let text = config(port, upstream.port, facilitator.port, "", &extra).replacen(
            "threads = 2\n",
            &format!("threads = 2\nsettle_buffer = \"{}KiB\"\n", BOUND / 1024),
            1,
        );
        assert!(text.contains("settle_buffer"), "{text}");
        let gateway = TestGateway::builder(&text).start();
        Self {
            upstream,
            facilitator,
            gateway,
            journal,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    async fn settles(&self) -> u64 {
        settle_calls(self.facilitator.port).await
    }

    async fn paid_get(&self, path: &str, payment: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("PAYMENT-SIGNATURE", payment)
            .send()
            .await
            .unwrap()
    }

    /// (state, reason) of every journal line, in order.
    fn journal_lines(&self) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.journal)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|l| {
                (
                    l["state"].as_str().unwrap().to_string(),
                    l["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The count of `x402_requests_total` for the `* /paid/**` route and `outcome`, once it
    /// reaches `expected` (a request is counted as it ends, just after its answer went out) or
    /// after 5 s.
    async fn requests_counted(&self, outcome: &str, expected: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let counted = self.requests_counted_now(outcome).await;
            if counted >= expected || Instant::now() > deadline {
                return counted;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn requests_counted_now(&self, outcome: &str) -> u64 {
        self.paid_route_metric("x402_requests_total", &format!("outcome=\"{outcome}\""))
            .await
    }

    /// `x402_settled_answers_cut_total` of the paid route, read once its request was counted.
    async fn answers_cut(&self) -> u64 {
        self.paid_route_metric("x402_settled_answers_cut_total", "")
            .await
    }

    /// The value of metric `name` for the `* /paid/**` route, on the series whose labels hold
    /// `label` (0 when there is none).
    async fn paid_route_metric(&self, name: &str, label: &str) -> u64 {
        let text = self
            .http
            .get(self.gateway.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{'))
                    && l.contains(label)
                    && l.contains("route=\"* /paid/**\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .map_or(0, |n| n as u64)
    }

    /// `receipts` over the journal file, as an operator runs it.
    fn receipts(&self, args: &[&str]) -> Vec<Value> {
        let out = std::process::Command::new(gateway_bin())
            .arg("receipts")
            .arg("--journal")
            .arg(&self.journal)
            .args(["--format", "json"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn receipt(r: &reqwest::Response) -> Option<Value> {
    r.headers()
        .get("payment-response")
        .map(|v| decode_b64_json(v.to_str().unwrap()))
}

fn pairs(lines: &[(&str, &str)]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|(s, r)| (s.to_string(), r.to_string()))
        .collect()
}

#[tokio::test]
async fn a_body_cut_short_of_its_length_is_not_charged_and_the_payment_buys_a_retry() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/cut")).await;
    let r = bed.paid_get("/paid/cut", &payment).await;
    assert_eq!(r.status(), 502);
    assert!(receipt(&r).is_none(), "nothing settled, no receipt");
    let body: Value = r.json().await.expect("the gateway's JSON error");
    assert_eq!(body["error"], BODY_INCOMPLETE, "{body}");
    assert!(
        body.get("partial").is_none(),
        "nothing of the cut body: {body}"
    );
    assert_eq!(
        bed.settles().await,
        0,
        "the facilitator's /settle was never called"
    );
    assert_eq!(bed.upstream.hits(), 1);
    assert_eq!(
        bed.journal_lines(),
        pairs(&[("verified", ""), ("not_charged", BODY_INCOMPLETE)])
    );
    assert_eq!(bed.requests_counted("not_charged", 1).await, 1);
    assert_eq!(bed.requests_counted("paid", 0).await, 0);

    // The reservation was released: the same authorization buys a whole answer.
    let r = bed.paid_get("/paid/whole", &payment).await;
    assert_eq!(r.status(), 200);
    assert_eq!(receipt(&r).expect("a receipt")["success"], true);
    assert_eq!(r.text().await.unwrap(), whole_body());
    assert_eq!(bed.settles().await, 1);
    assert_eq!(bed.upstream.hits(), 2);
    assert_eq!(
        bed.journal_lines(),
        pairs(&[
            ("verified", ""),
            ("not_charged", BODY_INCOMPLETE),
            ("verified", ""),
            ("settled", "")
        ])
    );
    assert!(
        bed.receipts(&["--refund-candidates"]).is_empty(),
        "nothing moved for the cut answer, nothing to refund"
    );
    assert_eq!(bed.answers_cut().await, 0, "no settled answer was cut");
}

#[tokio::test]
async fn a_whole_body_within_the_bound_is_settled_once_and_delivered_intact() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/whole")).await;
    let r = bed.paid_get("/paid/whole", &payment).await;
    assert_eq!(r.status(), 200);
    let settlement = receipt(&r).expect("a receipt");
    assert_eq!(settlement["success"], true);
    let length = whole_body().len().to_string();
    assert_eq!(
        r.headers()["content-length"].to_str().unwrap(),
        length.as_str()
    );
    assert_eq!(r.text().await.unwrap(), whole_body(), "the body intact");
    assert_eq!(bed.settles().await, 1, "settled once");
    assert_eq!(bed.upstream.hits(), 1);
    assert_eq!(
        bed.journal_lines(),
        pairs(&[("verified", ""), ("settled", "")])
    );
    assert_eq!(bed.requests_counted("paid", 1).await, 1);

    // Spent: the same authorization does not buy a second answer.
    let again = bed.paid_get("/paid/whole", &payment).await;
    assert_eq!(again.status(), 402);
    assert_eq!(bed.settles().await, 1);
    assert_eq!(bed.upstream.hits(), 1);
}

#[tokio::test]
async fn a_body_longer_than_the_bound_streams_and_is_settled_on_its_head() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/large")).await;
    let r = bed.paid_get("/paid/large", &payment).await;
    assert_eq!(r.status(), 200);
    assert_eq!(receipt(&r).expect("a receipt on the head")["success"], true);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), LARGE);
    assert_eq!(&body[..], &large_body()[..], "the body intact");
    assert!(
        bed.upstream.settled_mid_body.load(Ordering::SeqCst),
        "settled while the upstream still held back most of the body"
    );
    assert_eq!(bed.settles().await, 1);
    assert_eq!(bed.upstream.hits(), 1);
    assert_eq!(
        bed.journal_lines(),
        pairs(&[("verified", ""), ("settled", "")])
    );
}

#[tokio::test]
async fn a_chunked_stream_cut_after_settlement_is_journaled_as_cut() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/paid/chunked-cut")).await;
    let r = bed.paid_get("/paid/chunked-cut", &payment).await;
    assert_eq!(r.status(), 200, "the head went out, settled");
    let settlement = receipt(&r).expect("a receipt on the head");
    assert_eq!(settlement["success"], true);
    assert!(
        r.bytes().await.is_err(),
        "the client sees the stream broken off, not a complete answer"
    );
    assert_eq!(bed.settles().await, 1, "settled once, on the head");
    assert_eq!(bed.upstream.hits(), 1);
    // The line is written as the request ends, just after the client sees the break.
    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.journal_lines().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        bed.journal_lines(),
        pairs(&[("verified", ""), ("settled", ""), ("settled", BODY_CUT)])
    );
    // Still a paid request; the journal and a metric mark it for an operator to refund.
    assert_eq!(bed.requests_counted("paid", 1).await, 1);
    assert_eq!(bed.answers_cut().await, 1);
    let candidates = bed.receipts(&["--refund-candidates"]);
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    assert_eq!(candidates[0]["state"], "settled");
    assert_eq!(candidates[0]["reason"], BODY_CUT);
    assert_eq!(candidates[0]["transaction"], settlement["transaction"]);
    // The authorization is spent.
    let again = bed.paid_get("/paid/chunked-cut", &payment).await;
    assert_eq!(again.status(), 402);
    assert_eq!(bed.settles().await, 1);
}

#[tokio::test]
async fn a_route_that_turns_holding_off_settles_on_the_head_and_journals_the_cut() {
    let bed = Bed::start().await;
    let payment = pay_header_for(&bed.url("/streamed/cut")).await;
    let r = bed.paid_get("/streamed/cut", &payment).await;
    assert_eq!(r.status(), 200, "settled on the head, proxied as it came");
    let settlement = receipt(&r).expect("a receipt on the head");
    assert_eq!(settlement["success"], true);
    assert!(r.bytes().await.is_err(), "the body breaks off");
    assert_eq!(bed.settles().await, 1);
    assert_eq!(bed.upstream.hits(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.journal_lines().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        bed.journal_lines(),
        pairs(&[("verified", ""), ("settled", ""), ("settled", BODY_CUT)])
    );
    let candidates = bed.receipts(&["--refund-candidates"]);
    assert_eq!(candidates.len(), 1, "{candidates:?}");
    assert_eq!(candidates[0]["route"], "GET /streamed/**");
}

/// A client that sends `Expect: 100-continue` waits for it before its body. The gateway, which
/// reads a held request's body itself, says it; an unpaid request is refused without it, so
/// the body is never sent.
#[tokio::test]
async fn expect_continue_is_answered_before_a_held_body_and_refused_without_a_payment() {
    let bed = Bed::start().await;
    let body = br#"{"a":12345}"#;
    let head = |payment: &str| {
        format!(
            "POST /paid/whole HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n{payment}\r\n",
            body.len()
        )
    };

    // Unpaid: the challenge comes at once, and the body is never asked for.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", bed.gateway.port))
        .await
        .unwrap();
    stream.write_all(head("").as_bytes()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .expect("an answer without the body")
        .expect("a response head");
    assert!(first.starts_with("HTTP/1.1 402"), "{first}");
    assert_eq!(bed.upstream.hits(), 0);

    // Paid: `100 Continue`, then the body, then the settled answer.
    let payment = pay_header_for(&bed.url("/paid/whole")).await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", bed.gateway.port))
        .await
        .unwrap();
    stream
        .write_all(head(&format!("PAYMENT-SIGNATURE: {payment}\r\n")).as_bytes())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .expect("100 Continue before the body is sent")
        .expect("a response head");
    assert!(first.starts_with("HTTP/1.1 100"), "{first}");
    assert_eq!(bed.upstream.hits(), 0, "nothing sent on before the body");
    stream.write_all(body).await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(10), read_head(&mut stream))
        .await
        .expect("the answer")
        .expect("a response head");
    assert!(last.starts_with("HTTP/1.1 200"), "{last}");
    assert!(
        last.to_ascii_lowercase().contains("payment-response:"),
        "{last}"
    );
    let answer = read_framed_body(&mut stream, &last).await;
    assert_eq!(String::from_utf8(answer).unwrap(), whole_body());
    assert_eq!(bed.settles().await, 1);
    assert_eq!(bed.upstream.hits(), 1);
}
