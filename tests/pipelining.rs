//! HTTP/1.1 pipelining, tried from outside on a raw socket against the real binary: requests
//! written at once on one keep-alive connection, and a request written while an answer is still
//! streaming. Every byte of the first answer must arrive (a paid stream is never cut after its
//! settlement), and the requests behind it are answered in order, or the first answer says
//! `Connection: close` and the connection closes cleanly after it.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one read may wait before the test fails instead of hanging.
const READ_WITHIN: Duration = Duration::from_secs(10);

/// What the echo upstream streams on `/…/sse`: five events, 50 ms apart, chunked.
const SSE_BODY: &str = "id: 1\ndata: {\"n\":1}\n\n\
                        id: 2\ndata: {\"n\":2}\n\n\
                        id: 3\ndata: {\"n\":3}\n\n\
                        id: 4\ndata: {\"n\":4}\n\n\
                        id: 5\ndata: {\"n\":5}\n\n";

/// One answer as it came off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names lower-cased, in order.
    headers: Vec<(String, String)>,
    /// The body, chunked framing removed.
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the answer announces that the connection closes after it.
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The path the echo upstream saw.
    fn echoed_path(&self) -> String {
        let echo: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("an echo body, not {:?}", self.text()));
        echo["path"].as_str().unwrap_or_default().to_string()
    }
}

/// A client connection read byte-exact: what arrived and is not consumed yet stays in `buf`.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &str) {
        self.stream.write_all(bytes.as_bytes()).await.unwrap();
    }

    /// Reads more; false once the gateway closed the connection.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(READ_WITHIN, self.stream.read(&mut chunk))
            .await
            .expect("the gateway answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Takes `n` bytes, reading until they are there.
    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill().await,
                "closed {} bytes short: {:?}",
                n - self.buf.len(),
                String::from_utf8_lossy(&self.buf)
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Takes one CRLF-ended line, without its CRLF.
    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(end + 2).await;
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(
                self.fill().await,
                "closed inside a line: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads an answer's head: its status and headers.
    async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line, not {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        (status, headers)
    }

    /// Reads a whole answer, its body as framed (length, chunked, or up to the close).
    async fn answer(&mut self) -> Answer {
        let (status, headers) = self.head().await;
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if let Some(length) = answer.header("content-length") {
            let length: usize = length.parse().unwrap();
            answer.body = self.take(length).await;
        } else if answer
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let size_line = self.line().await;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                    .unwrap_or_else(|_| panic!("a chunk size, not {size_line:?}"));
                if size == 0 {
                    // trailers, up to the empty line
                    while !self.line().await.is_empty() {}
                    break;
                }
                let data = self.take(size).await;
                answer.body.extend_from_slice(&data);
                assert_eq!(self.line().await, "", "a chunk ends with CRLF");
            }
        } else if status != 204 && status != 304 {
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buf);
        }
        answer
    }

    /// Waits until `needle` has arrived (without consuming anything).
    async fn wait_for(&mut self, needle: &str) {
        while !self
            .buf
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            assert!(
                self.fill().await,
                "closed before {needle:?} arrived: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Whether the gateway closes the connection with nothing more to say.
    async fn closes_cleanly(&mut self) -> bool {
        let mut chunk = [0u8; 256];
        match tokio::time::timeout(Duration::from_secs(3), self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) => self.buf.is_empty(),
            _ => false,
        }
    }
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: buyer.example\r\n{extra}\r\n")
}

/// What became of `count` requests pipelined behind `first`: answered in order (returned), or
/// refused cleanly: `first` said `Connection: close` and the connection closed right after it
/// (`None`). A first answer that said keep-alive and a connection closed anyway fails.
async fn the_rest(conn: &mut Conn, first: &Answer, count: usize) -> Option<Vec<Answer>> {
    if first.closes() {
        assert!(
            conn.closes_cleanly().await,
            "the first answer said Connection: close, so the connection ends after it"
        );
        return None;
    }
    let mut rest = Vec::new();
    for i in 0..count {
        if conn.buf.is_empty() && !conn.fill().await {
            panic!(
                "the first answer said keep-alive, yet the connection closed with {} pipelined \
                 request(s) unanswered",
                count - i
            );
        }
        rest.push(conn.answer().await);
    }
    Some(rest)
}

#[tokio::test]
async fn requests_written_at_once_on_a_free_route_are_answered_in_order() {
    let rig = Rig::start().await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&format!(
        "{}{}{}",
        get("/free/one", ""),
        get("/free/two", ""),
        get("/free/three", "")
    ))
    .await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.echoed_path(), "/free/one");
    let answered = match the_rest(&mut conn, &first, 2).await {
        Some(rest) => {
            let paths: Vec<_> = rest.iter().map(|a| (a.status, a.echoed_path())).collect();
            assert_eq!(
                paths,
                [
                    (200, "/free/two".to_string()),
                    (200, "/free/three".to_string())
                ]
            );
            2
        }
        None => 0,
    };
    assert_eq!(rig.upstream_hits().await, 1 + answered);
}

#[tokio::test]
async fn a_request_written_while_a_chunked_answer_streams_does_not_cut_it() {
    let rig = Rig::start().await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&get("/free/sse", "")).await;
    // The head and the first event are out; the rest is still coming from the upstream.
    conn.wait_for("data: {\"n\":1}").await;
    conn.send(&get("/free/after", "")).await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("transfer-encoding"),
        Some("chunked"),
        "{first:?}"
    );
    assert_eq!(first.text(), SSE_BODY, "the whole stream arrives");
    let rest = the_rest(&mut conn, &first, 1).await;
    if let Some(rest) = &rest {
        assert_eq!(rest[0].status, 200);
        assert_eq!(rest[0].echoed_path(), "/free/after");
    }
    assert_eq!(
        rig.upstream_hits().await,
        1 + rest.map_or(0, |r| r.len() as u64)
    );
}

#[tokio::test]
async fn requests_pipelined_before_and_during_a_chunked_answer_are_answered_in_order() {
    let rig = Rig::start().await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&format!("{}{}", get("/free/sse", ""), get("/free/two", "")))
        .await;
    conn.wait_for("data: {\"n\":1}").await;
    conn.send(&get("/free/three", "")).await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), SSE_BODY, "the whole stream arrives");
    let rest = the_rest(&mut conn, &first, 2).await;
    if let Some(rest) = &rest {
        let paths: Vec<_> = rest.iter().map(|a| (a.status, a.echoed_path())).collect();
        assert_eq!(
            paths,
            [
                (200, "/free/two".to_string()),
                (200, "/free/three".to_string())
            ]
        );
    }
    assert_eq!(
        rig.upstream_hits().await,
        1 + rest.map_or(0, |r| r.len() as u64)
    );
}

#[tokio::test]
async fn requests_pipelined_behind_a_paid_request_are_answered_and_it_settles_once() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid").await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&format!(
        "{}{}{}",
        get("/paid?n=1", &format!("PAYMENT-SIGNATURE: {payment}\r\n")),
        get("/free/two", ""),
        // unpaid: the gateway's own 402
        get("/paid?n=3", ""),
    ))
    .await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.echoed_path(), "/paid?n=1");
    let receipt = decode_b64_json(first.header("payment-response").expect("a receipt"));
    assert_eq!(receipt["success"], true);
    let upstream_answered = match the_rest(&mut conn, &first, 2).await {
        Some(rest) => {
            assert_eq!(rest[0].status, 200);
            assert_eq!(rest[0].echoed_path(), "/free/two");
            assert_eq!(rest[1].status, 402, "{}", rest[1].text());
            assert!(rest[1].header("payment-required").is_some());
            1
        }
        None => 0,
    };
    assert_eq!(
        rig.facilitator_calls().await,
        (1, 1),
        "exactly one settlement"
    );
    assert_eq!(rig.upstream_hits().await, 1 + upstream_answered);
}

#[tokio::test]
async fn a_request_written_while_a_paid_stream_flows_does_not_cut_the_settled_stream() {
    let rig = Rig::start().await;
    let payment = rig.pay_header("/paid/sse").await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&get(
        "/paid/sse",
        &format!("PAYMENT-SIGNATURE: {payment}\r\n"),
    ))
    .await;
    conn.wait_for("data: {\"n\":1}").await;
    conn.send(&get("/free/after", "")).await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let receipt = decode_b64_json(first.header("payment-response").expect("a receipt"));
    assert_eq!(receipt["success"], true);
    assert_eq!(
        first.text(),
        SSE_BODY,
        "the buyer gets the whole stream paid for"
    );
    let rest = the_rest(&mut conn, &first, 1).await;
    if let Some(rest) = &rest {
        assert_eq!(rest[0].status, 200);
        assert_eq!(rest[0].echoed_path(), "/free/after");
    }
    assert_eq!(
        rig.facilitator_calls().await,
        (1, 1),
        "exactly one settlement"
    );
    assert_eq!(
        rig.upstream_hits().await,
        1 + rest.map_or(0, |r| r.len() as u64)
    );
}

#[tokio::test]
async fn a_request_with_a_body_and_one_behind_it_are_answered_in_order() {
    let rig = Rig::start().await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&format!(
        "POST /echo HTTP/1.1\r\nHost: buyer.example\r\nContent-Length: 5\r\n\r\nhello{}",
        get("/free/two", "")
    ))
    .await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200);
    let echo: Value = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(
        echo["bodyBytes"], 5,
        "the body is the first request's alone"
    );
    let rest = the_rest(&mut conn, &first, 1).await;
    if let Some(rest) = &rest {
        assert_eq!(rest[0].status, 200);
        assert_eq!(rest[0].echoed_path(), "/free/two");
    }
    assert_eq!(
        rig.upstream_hits().await,
        1 + rest.map_or(0, |r| r.len() as u64)
    );
}

#[tokio::test]
async fn a_request_asking_to_close_is_answered_alone_and_the_connection_closes() {
    let rig = Rig::start().await;
    let mut conn = Conn::open(rig.gateway.port).await;
    conn.send(&format!(
        "{}{}",
        get("/free/sse", "Connection: close\r\n"),
        get("/free/two", "")
    ))
    .await;

    let first = conn.answer().await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), SSE_BODY);
    assert!(first.closes(), "{first:?}");
    assert_eq!(the_rest(&mut conn, &first, 1).await.map(|r| r.len()), None);
    assert_eq!(rig.upstream_hits().await, 1);
}
