//! However a request spells its target, method or headers, a priced resource is priced, and the
//! upstream never sees a header that could make it serve something else or trust a forged payer.
//! Requests go over raw sockets, and the upstream is a raw socket too, recording exactly what the
//! gateway sent it.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An upstream that records every request it is sent (head and `Content-Length` body), byte for
/// byte, and answers 200.
struct RawUpstream {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl RawUpstream {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = record.clone();
                std::thread::spawn(move || serve(stream, &record));
            }
        });
        Self { port, seen }
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn last(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// Reads requests off one connection until it closes: the head, then a `Content-Length` or
/// chunked body. A request is recorded as its head, a blank line and the body (de-chunked).
fn serve(mut stream: TcpStream, record: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let header = |wanted: &str| {
                head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case(wanted)
                        .then(|| value.trim().to_ascii_lowercase())
                })
            };
            let framed = if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                dechunk(&buffer[end + 4..])
            } else {
                let length = header("content-length")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                let rest = &buffer[end + 4..];
                (rest.len() >= length).then(|| (rest[..length].to_vec(), length))
            };
            let Some((body, consumed)) = framed else {
                break;
            };
            let received = format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body));
            buffer.drain(..end + 4 + consumed);
            record.lock().unwrap().push(received);
            let reply =
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(reply).is_err() {
                return;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A complete chunked body at the start of `bytes`: its data and the bytes it took, or `None`
/// while it is incomplete.
fn dechunk(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let line_end = at + find(&bytes[at..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&bytes[at..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = line_end + 2;
        if size == 0 {
            let trailer_end = at + find(&bytes[at..], b"\r\n")?;
            return Some((data, trailer_end + 2));
        }
        if bytes.len() < at + size + 2 {
            return None;
        }
        data.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Gateway in front of a raw upstream. No request here carries a payment, so the in-process
/// facilitator is never asked anything.
struct Stand {
    upstream: RawUpstream,
    gateway: TestGateway,
}

impl Stand {
    fn start(server_extra: &str) -> Self {
        let upstream = RawUpstream::start();
        let port = free_port();
        let admin = free_port();
        let config = format!(
            r#"unmatched = "proxy"
[server]
listen = "127.0.0.1:{port}"
threads = 1
{server_extra}
[admin]
listen = "127.0.0.1:{admin}"
[upstream]
url = "http://127.0.0.1:{}"
[facilitator]
kind = "local"
[defaults]
network = "eip155:84532"
pay_to = "{PAY_TO}"
[[routes]]
match = "GET /paid"
price = "$0.01"
[[routes]]
match = "GET /keys"
price = "$0.01"
[[routes]]
match = "DELETE /items/:id"
price = "$0.01"
[[routes]]
match = "* /free/**"
free = true
"#,
            upstream.port
        );
        let gateway = TestGateway::builder(&config).start();
        Self { upstream, gateway }
    }

    /// Sends `head` (request line and headers, without the blank line) and returns the status,
    /// the response head and the JSON body (`Null` when there is none).
    fn send(&self, head: &str) -> (u16, String, Value) {
        self.exchange(
            head,
            format!("{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes(),
        )
    }

    /// Sends `head` with `body` (framed by `Content-Length`, or chunked in two chunks when
    /// `chunked`) and returns the status and the JSON body.
    fn send_body(&self, head: &str, body: &[u8], chunked: bool) -> (u16, Value) {
        let mut request =
            format!("{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\n").into_bytes();
        if chunked {
            let (first, second) = body.split_at(body.len() / 2);
            request.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for chunk in [first, second] {
                request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                request.extend_from_slice(chunk);
                request.extend_from_slice(b"\r\n");
            }
            request.extend_from_slice(b"0\r\n\r\n");
        } else {
            request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            request.extend_from_slice(body);
        }
        let (status, _, reply) = self.exchange(head, request);
        (status, reply)
    }

    /// Writes `request` on a new connection and reads the whole response: status, head and JSON
    /// body (`Null` when there is none). `head` names the request in a failure.
    fn exchange(&self, head: &str, request: Vec<u8>) -> (u16, String, Value) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.gateway.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // A refused body may be cut off mid-write; the response is what counts.
        let _ = stream.write_all(&request);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let (response_head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = response_head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status for {head:?}: {text:?}"));
        let body = serde_json::from_str(body).unwrap_or(Value::Null);
        (status, response_head.to_string(), body)
    }

    /// Asserts that `head` gets `status` with error code `code` (unchecked when empty, as for a
    /// HEAD), with a challenge when the status is 402, and never reaches the upstream.
    fn refused(&self, head: &str, status: u16, code: &str) {
        let before = self.upstream.hits();
        let (got, response_head, body) = self.send(head);
        assert_eq!(got, status, "{head:?}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"], code, "{head:?}: {body}");
        }
        if status == 402 {
            assert!(
                response_head
                    .to_ascii_lowercase()
                    .contains("\r\npayment-required: "),
                "{head:?} is challenged: {response_head}"
            );
        }
        assert_eq!(
            self.upstream.hits(),
            before,
            "{head:?} reached the upstream"
        );
    }

    /// Sends `head` to a free route and returns the head the upstream received.
    fn forwarded(&self, head: &str) -> String {
        let before = self.upstream.hits();
        let (status, _, _) = self.send(head);
        assert_eq!(status, 200, "{head:?}");
        assert_eq!(self.upstream.hits(), before + 1, "{head:?}");
        self.upstream.last().to_ascii_lowercase()
    }
}

const CHALLENGED: &str =
    "Payment required: send PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (x402 v1)";

#[test]
fn targets_that_are_not_origin_form_are_refused() {
    let stand = Stand::start("");
    for head in [
        "GET paid HTTP/1.1",
        "GET %2fpaid HTTP/1.1",
        "GET paid?x=1 HTTP/1.1",
        "GET ./paid HTTP/1.1",
        "GET ftp://127.0.0.1/paid HTTP/1.1",
        // Four layers of percent-encoding: one reader more decodes it to /paid.
        "GET /%25252570aid HTTP/1.1",
    ] {
        stand.refused(head, 400, "invalid_request_target");
    }
    // Absolute-form is a real form: it is priced by its path.
    stand.refused("GET http://127.0.0.1/PAID HTTP/1.1", 402, CHALLENGED);
}

#[test]
fn methods_that_are_not_upper_case_are_refused_and_head_is_priced_as_get() {
    let stand = Stand::start("");
    for head in [
        "get /paid HTTP/1.1",
        "Get /paid HTTP/1.1",
        "head /paid HTTP/1.1",
        "get /free/x HTTP/1.1",
    ] {
        stand.refused(head, 400, "invalid_method");
    }
    stand.refused("HEAD /paid HTTP/1.1", 402, "");
}

#[test]
fn method_overrides_are_priced_as_the_overriding_method_and_stripped() {
    let stand = Stand::start("");
    for header in [
        "X-HTTP-Method-Override",
        "X-HTTP-Method",
        "X-Method-Override",
        "X_HTTP_Method_Override",
    ] {
        stand.refused(
            &format!("POST /paid HTTP/1.1\r\n{header}: GET"),
            402,
            CHALLENGED,
        );
        stand.refused(
            &format!("POST /items/7 HTTP/1.1\r\n{header}: delete"),
            402,
            CHALLENGED,
        );
    }
    stand.refused("POST /paid?_method=GET HTTP/1.1", 402, CHALLENGED);
    stand.refused("POST /paid?_method=get&x=1 HTTP/1.1", 402, CHALLENGED);
    stand.refused(
        "POST /paid?_method=PUT HTTP/1.1\r\nX-HTTP-Method-Override: GET",
        400,
        "conflicting_method_override",
    );
    stand.refused(
        "POST /paid HTTP/1.1\r\nX-HTTP-Method: G(E)T",
        400,
        "invalid_method_override",
    );
    // On a free route the overrides are removed before the upstream.
    let seen = stand.forwarded(
        "POST /free/x HTTP/1.1\r\nX-HTTP-Method-Override: DELETE\r\nX-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nX_HTTP_Method_Override: DELETE\r\nContent-Length: 0",
    );
    assert!(seen.starts_with("post /free/x "), "{seen}");
    assert!(
        !seen.contains("method"),
        "override headers forwarded: {seen}"
    );
}

#[test]
fn the_challenge_of_an_override_names_the_method_it_is_priced_as() {
    let stand = Stand::start("");
    for head in [
        "POST /paid HTTP/1.1\r\nX-HTTP-Method-Override: GET",
        "POST /paid?_method=GET HTTP/1.1",
    ] {
        let (status, _, body) = stand.send(head);
        assert_eq!(status, 402, "{head:?}: {body}");
        assert_eq!(
            body["accepts"][0]["outputSchema"]["input"]["method"], "GET",
            "{head:?}: {body}"
        );
    }
    let (status, _, body) = stand.send("GET /paid HTTP/1.1");
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["accepts"][0]["outputSchema"]["input"]["method"], "GET");
}

#[test]
fn a_method_field_in_a_post_body_prices_the_request_as_that_method() {
    let stand = Stand::start("");
    let multipart =
        "--B0und\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nget\r\n--B0und--\r\n";
    let overriding: [(&str, &str); 5] = [
        (
            "Content-Type: application/x-www-form-urlencoded",
            "q=1&_method=GET",
        ),
        (
            "Content-Type: application/x-www-form-urlencoded; charset=UTF-8",
            "_method=get",
        ),
        // Rack reads a POST without a content type as a form.
        ("X-Nothing: 1", "_method=GET"),
        (
            "Content-Type: multipart/form-data; boundary=B0und",
            multipart,
        ),
        (
            "Content-Type: application/json",
            r#"{"_method":"GET","q":1}"#,
        ),
    ];
    for (header, body) in overriding {
        for chunked in [false, true] {
            let before = stand.upstream.hits();
            let head = format!("POST /paid HTTP/1.1\r\n{header}");
            let (status, reply) = stand.send_body(&head, body.as_bytes(), chunked);
            assert_eq!(status, 402, "{header} {body:?} chunked={chunked}: {reply}");
            assert_eq!(
                reply["accepts"][0]["outputSchema"]["input"]["method"],
                "GET"
            );
            assert_eq!(
                stand.upstream.hits(),
                before,
                "{body:?} reached the upstream"
            );
        }
    }
    let before = stand.upstream.hits();
    let (status, _) = stand.send_body(
        "POST /items/7 HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        b"_method=delete",
        false,
    );
    assert_eq!(status, 402);
    let (status, reply) = stand.send_body(
        "POST /paid HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        b"_method=GET&_method=PUT",
        false,
    );
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"], "conflicting_method_override");
    assert_eq!(stand.upstream.hits(), before);
}

#[test]
fn a_post_body_read_for_pricing_reaches_the_upstream_unchanged() {
    let stand = Stand::start("");
    let body = format!("note={}&_method=PATCH", "x".repeat(20_000));
    for chunked in [false, true] {
        let before = stand.upstream.hits();
        let (status, _) = stand.send_body(
            "POST /paid HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
            body.as_bytes(),
            chunked,
        );
        assert_eq!(
            status, 200,
            "an unpriced override passes (chunked={chunked})"
        );
        assert_eq!(stand.upstream.hits(), before + 1);
        let seen = stand.upstream.last();
        let (_, received) = seen.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            received, body,
            "the upstream got the body as sent (chunked={chunked})"
        );
    }
    // A body too large to read before pricing is refused, not passed on unread.
    let before = stand.upstream.hits();
    let large = format!("_method=GET&pad={}", "y".repeat(70_000));
    for chunked in [false, true] {
        let (status, reply) = stand.send_body(
            "POST /paid HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
            large.as_bytes(),
            chunked,
        );
        assert_eq!(status, 413, "chunked={chunked}: {reply}");
        assert_eq!(reply["error"], "body_too_large_to_price");
    }
    assert_eq!(stand.upstream.hits(), before);
    // A path no other method is priced on is not read, whatever its size.
    let (status, _) = stand.send_body(
        "POST /free/upload HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        large.as_bytes(),
        false,
    );
    assert_eq!(status, 200);
    assert_eq!(stand.upstream.hits(), before + 1);
}

#[test]
fn forwarded_overrides_reach_the_upstream_and_still_price_the_request() {
    let stand = Stand::start(r#"method_override = "forward""#);
    stand.refused(
        "POST /paid HTTP/1.1\r\nX-HTTP-Method-Override: GET",
        402,
        CHALLENGED,
    );
    let seen = stand
        .forwarded("POST /free/x HTTP/1.1\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0");
    assert!(
        seen.contains("\r\nx-http-method-override: delete"),
        "{seen}"
    );
}

#[test]
fn headers_naming_another_url_are_removed_on_every_route() {
    let stand = Stand::start("");
    let seen = stand.forwarded(
        "GET /free/x HTTP/1.1\r\nX-Original-URL: /paid\r\nX-Rewrite-URL: /paid\r\nX-Original-URI: /paid\r\nX_Original_URL: /paid\r\nX-Forwarded-Prefix: /paid",
    );
    assert!(seen.starts_with("get /free/x "), "{seen}");
    assert!(
        !seen.contains("/paid"),
        "a rewrite header was forwarded: {seen}"
    );
}

#[test]
fn unicode_spellings_of_a_priced_path_are_priced() {
    let stand = Stand::start("");
    for target in [
        "/pa%C4%B1d",         // dotless ı upper-cases to I
        "/PA%C4%B0D",         // İ lower-cases to i
        "/ke%79%C5%BF",       // long s upper-cases to S
        "/%E2%84%AAeys",      // Kelvin sign is K
        "/%EF%BD%8Beys",      // full-width k
        "/KEY%C3%9F/../keys", // folding runs after dot segments are resolved
    ] {
        stand.refused(&format!("GET {target} HTTP/1.1"), 402, CHALLENGED);
    }
}

#[test]
fn windows_spellings_of_a_priced_path_are_priced() {
    let stand = Stand::start("");
    for target in [
        "/paid.",
        "/paid..",
        "/paid%2e",
        "/paid.%20",
        "/paid%20.",
        "/paid::$DATA",
        "/PAID::$data.",
        "/paid%00.",
    ] {
        stand.refused(&format!("GET {target} HTTP/1.1"), 402, CHALLENGED);
    }
}

#[test]
fn underscore_aliases_of_gateway_headers_never_reach_the_upstream() {
    let stand = Stand::start("");
    let seen = stand.forwarded(
        "GET /free/x HTTP/1.1\r\nX_Payment_Payer: 0x0000000000000000000000000000000000000bad\r\nX_PAYMENT_AMOUNT: 999\r\nX-Payment-Network: forged\r\nPayment_Signature: e30=\r\nX_Forwarded_For: 10.0.0.1\r\nX_Custom: kept",
    );
    for forged in ["0bad", "999", "forged", "e30=", "10.0.0.1"] {
        assert!(!seen.contains(forged), "{forged} was forwarded: {seen}");
    }
    assert!(seen.contains("\r\nx_custom: kept"), "{seen}");
    // The gateway's own headers are there, under their real names.
    assert!(seen.contains("\r\nx-forwarded-for: 127.0.0.1"), "{seen}");
}

#[test]
fn every_underscore_header_is_dropped_when_configured() {
    let stand = Stand::start("drop_underscore_headers = true");
    let seen = stand.forwarded("GET /free/x HTTP/1.1\r\nX_Custom: gone\r\nX-Custom: kept");
    assert!(!seen.contains("gone"), "{seen}");
    assert!(seen.contains("\r\nx-custom: kept"), "{seen}");
}

#[test]
fn preflights_still_reach_the_upstream() {
    let stand = Stand::start("");
    let seen = stand.forwarded(
        "OPTIONS /paid HTTP/1.1\r\nOrigin: http://example.com\r\nAccess-Control-Request-Method: GET",
    );
    assert!(seen.starts_with("options /paid "), "{seen}");
}
