//! Benchmark only: two small clients the load generator cannot play.
//!
//! * `hold ADDR N PATH`: opens N keep-alive connections, sends one `GET PATH` on each and keeps them
//!   all open and idle; prints `{"held":N}` and keeps them until it is killed.
//! * `paid ADDR PATH FILE N [SKIP]`: sends N payment headers of FILE (after the first SKIP lines),
//!   one request each, in sequence on one keep-alive connection; prints the status counts as JSON.
//!   Used under a profiler, where a fixed request count matters more than speed.
//! * `get ADDR PATH N`: sends N `GET PATH` requests without payment, in sequence on one keep-alive
//!   connection; prints the status counts as JSON (the free route's profile).
//! * `first ADDR PATH FILE...`: sends the first header of each FILE, in sequence on one keep-alive
//!   connection; prints the status counts as JSON. Opens the `batch-settlement` channels of a
//!   voucher run (each file's first line is its channel's deposit) before the load starts.
//!
//! ```sh
//! cargo run --release --example bench_client -- hold 127.0.0.1:18402 5000 /free
//! ```

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// Reads one response with a `Content-Length` body; returns its status.
fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16> {
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status: u16 = head
                .split_ascii_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("malformed status line")?;
            let length: usize = head
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .context("response without Content-Length")?;
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    bail!("connection closed mid-body");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(status);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn hold(addr: &str, count: usize, path: &str) -> Result<()> {
    let mut held = Vec::with_capacity(count);
    let mut buf = Vec::new();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for i in 0..count {
        let mut stream =
            TcpStream::connect(addr).with_context(|| format!("connection {i} to {addr}"))?;
        stream.write_all(request.as_bytes())?;
        let status = read_response(&mut stream, &mut buf)?;
        if status != 200 {
            bail!("connection {i}: {path} answered {status}");
        }
        held.push(stream);
    }
    println!("{{\"held\":{}}}", held.len());
    std::io::stdout().flush()?;
    // The caller measures while every connection sits idle, then kills this process.
    loop {
        std::thread::park();
    }
}

fn paid(addr: &str, path: &str, file: &str, count: usize, skip: usize) -> Result<()> {
    let reader = BufReader::new(std::fs::File::open(file).with_context(|| file.to_string())?);
    let mut stream = TcpStream::connect(addr).with_context(|| addr.to_string())?;
    stream.set_nodelay(true)?;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut buf = Vec::new();
    let mut sent = 0;
    for line in reader.lines().skip(skip).take(count) {
        *statuses
            .entry(send_paid(&mut stream, addr, path, &line?, &mut buf)?)
            .or_default() += 1;
        sent += 1;
    }
    if sent < count {
        bail!("{file} holds only {sent} payments after line {skip}, {count} asked");
    }
    println!(
        "{}",
        serde_json::json!({ "sent": sent, "statuses": statuses })
    );
    Ok(())
}

/// Sends `header` as the payment of one `GET path`; returns the status.
fn send_paid(
    stream: &mut TcpStream,
    addr: &str,
    path: &str,
    header: &str,
    buf: &mut Vec<u8>,
) -> Result<u16> {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nPAYMENT-SIGNATURE: {header}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    read_response(stream, buf)
}

fn get(addr: &str, path: &str, count: usize) -> Result<()> {
    let mut stream = TcpStream::connect(addr).with_context(|| addr.to_string())?;
    stream.set_nodelay(true)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut buf = Vec::new();
    for _ in 0..count {
        stream.write_all(request.as_bytes())?;
        *statuses
            .entry(read_response(&mut stream, &mut buf)?)
            .or_default() += 1;
    }
    println!(
        "{}",
        serde_json::json!({ "sent": count, "statuses": statuses })
    );
    Ok(())
}

fn first(addr: &str, path: &str, files: &[&str]) -> Result<()> {
    let mut stream = TcpStream::connect(addr).with_context(|| addr.to_string())?;
    stream.set_nodelay(true)?;
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut buf = Vec::new();
    for file in files {
        let reader = BufReader::new(std::fs::File::open(file).with_context(|| file.to_string())?);
        let line = reader
            .lines()
            .next()
            .with_context(|| format!("{file} is empty"))??;
        *statuses
            .entry(send_paid(&mut stream, addr, path, &line, &mut buf)?)
            .or_default() += 1;
    }
    println!(
        "{}",
        serde_json::json!({ "sent": files.len(), "statuses": statuses })
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["hold", addr, n, path] => hold(addr, n.parse()?, path),
        ["paid", addr, path, file, n] => paid(addr, path, file, n.parse()?, 0),
        ["paid", addr, path, file, n, skip] => paid(addr, path, file, n.parse()?, skip.parse()?),
        ["get", addr, path, n] => get(addr, path, n.parse()?),
        ["first", addr, path, files @ ..] if !files.is_empty() => first(addr, path, files),
        _ => bail!(
            "usage: bench_client hold ADDR N PATH | paid ADDR PATH FILE N [SKIP] | get ADDR PATH N | first ADDR PATH FILE..."
        ),
    }
}
