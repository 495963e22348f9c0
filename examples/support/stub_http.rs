//! A deliberately tiny HTTP/1.1 server for the benchmark's upstream and stub facilitator.
//!
//! General-purpose servers would put their own costs into the measurement; this one only does what
//! the benchmark needs: keep-alive, `Content-Length` bodies, pipelining, one thread. It is not
//! robust against hostile input and must never be used outside `bench/`.

// Shared by several examples, each of which uses only part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Serves `handler` on `addr` until the process is killed, on one thread so that the load it adds
/// to the machine is predictable.
pub fn serve<H>(addr: SocketAddr, handler: H) -> std::io::Result<()>
where
    H: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    serve_delayed(addr, std::time::Duration::ZERO, handler)
}

/// [`serve`], answering each batch of requests only after `delay`, the way a facilitator that
/// waits on a chain does; each connection waits on its own, so the delay costs no CPU.
pub fn serve_delayed<H>(
    addr: SocketAddr,
    delay: std::time::Duration,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(&Request<'_>) -> Response + Send + Sync + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        println!("{{\"ready\":true,\"addr\":\"{}\"}}", listener.local_addr()?);
        let handler = Arc::new(handler);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                // A broken connection only ends that connection.
                let _ = connection(stream, handler.as_ref(), delay).await;
            });
        }
    })
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn content_length(head: &str) -> usize {
    head.lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Status",
    }
}

async fn connection<H>(
    mut stream: TcpStream,
    handler: &H,
    delay: std::time::Duration,
) -> std::io::Result<()>
where
    H: Fn(&Request<'_>) -> Response,
{
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Answer every complete request already buffered before writing, so pipelined requests
        // share one write.
        let mut consumed = 0;
        while let Some(end) = find_subslice(&buf[consumed..], b"\r\n\r\n") {
            let head_end = consumed + end + 4;
            let head = String::from_utf8_lossy(&buf[consumed..head_end]).into_owned();
            let body_len = content_length(&head);
            if buf.len() < head_end + body_len {
                break;
            }
            let mut parts = head.split_ascii_whitespace();
            let method = parts.next().unwrap_or("");
            let path = parts.next().unwrap_or("/");
            let response = handler(&Request {
                method,
                path,
                body: &buf[head_end..head_end + body_len],
            });
            out.extend_from_slice(
                format!(
                    "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n",
                    response.status,
                    reason(response.status),
                    response.body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(&response.body);
            consumed = head_end + body_len;
        }
        if consumed > 0 {
            buf.drain(..consumed);
        }
        if !out.is_empty() {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            stream.write_all(&out).await?;
            out.clear();
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The listen address from the first argument or `default`.
pub fn addr_from_args(default: &str) -> SocketAddr {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| default.to_string())
        .parse()
        .expect("first argument must be an address such as 127.0.0.1:18080")
}
