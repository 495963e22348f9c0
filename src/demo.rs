//! A tiny demo API for trying the gateway on a machine with nothing else running: it answers every
//! request with a small JSON document naming the path and the payer the gateway forwarded.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves the demo API on `addr` until the process ends.
pub async fn serve_demo_upstream(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "demo upstream listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut len = 0;
            while len < buf.len() {
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let mut lines = head.lines();
            let request_line = lines.next().unwrap_or_default();
            let path = request_line.split_whitespace().nth(1).unwrap_or("/");
            let payer = lines
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("x-payment-payer"))
                })
                .map(|(_, v)| v.trim().to_string());
            let body = serde_json::json!({
                "message": "hello from the demo API",
                "path": path,
                "paidBy": payer,
            })
            .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
