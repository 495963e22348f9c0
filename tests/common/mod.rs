//! Test rig: real processes on 127.0.0.1. The gateway binary under test ([`TestGateway`]), the
//! upstream API and the facilitator (tests/support/*.mjs) each run as their own process and are
//! killed on drop.
#![allow(dead_code)]

use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use x402_gateway::buyer::{random_nonce, Wallet};
use x402_gateway::x402::PaymentRequirements;

mod gateway;
pub use gateway::*;

pub const BUYER_KEY: &str = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a";
pub const PAY_TO: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
pub const OTHER: &str = "0x90F79bf6EB2c4f870365E785982E1f101E93b906";

/// A child process killed when the test ends, whatever the outcome.
pub struct Proc {
    child: Child,
    pub port: u16,
    /// The process's ready line.
    pub ready: Value,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Support scripts stop (and stop what they started, such as anvil) when stdin closes;
        // a kill is the fallback for those that do not within a second.
        let graceful = self.child.stdin.take().is_some();
        let deadline = Instant::now() + Duration::from_secs(1);
        while graceful && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn support(script: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/support")
        .join(script)
}

/// Starts a support script and waits for its `{"ready":true,"port":N}` line.
pub fn node(script: &str, args: &[&str]) -> Proc {
    let mut child = Command::new("node")
        .arg(support(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node is installed");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let ready: Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("{script} did not start: {line}"));
    let port = ready["port"].as_u64().unwrap_or(0) as u16;
    Proc { child, port, ready }
}

/// A loopback port nothing listens on now, never handed out before in this test process, and
/// below the kernel's ephemeral range. Two kinds of collision are kept out that way: the kernel
/// gives a port let go to the next `bind(0)` (two tests running at once would configure their
/// gateways on one port), and a helper that binds port 0 (the Node upstream and facilitators) or
/// an outgoing connection's source port could take a port from that range between here and the
/// gateway's own bind.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    const LOWEST: u16 = 10_000;
    let ceiling = ephemeral_floor();
    let span = ceiling.saturating_sub(LOWEST);
    assert!(
        span >= 1_000,
        "the kernel's ephemeral ports start at {ceiling}: too few ports below them for the tests"
    );
    let mut candidate = LOWEST + rand::random::<u16>() % span;
    for _ in 0..span {
        candidate = if candidate + 1 >= ceiling {
            LOWEST
        } else {
            candidate + 1
        };
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if given.contains(&candidate) || TcpListener::bind(("127.0.0.1", candidate)).is_err() {
            continue;
        }
        given.insert(candidate);
        return candidate;
    }
    panic!("no free port between {LOWEST} and {ceiling}");
}

/// The first port of the kernel's ephemeral range (what `bind(0)` and outgoing connections use).
fn ephemeral_floor() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// A loopback port where nothing listens and nothing can start to: the port stays bound (never
/// listening) for as long as the value lives, so connections to it are refused, and neither
/// another test's server nor an outgoing connection's source port can take it meanwhile. A port
/// from [`free_port`] that was let go can be both.
pub struct ClosedPort {
    _bound: tokio::net::TcpSocket,
    pub port: u16,
}

impl ClosedPort {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().expect("an address"))
            .expect("a loopback port to bind");
        let port = socket.local_addr().expect("the bound address").port();
        Self {
            _bound: socket,
            port,
        }
    }
}

/// Whether something listens on `127.0.0.1:port`. A connect to a port in the ephemeral range
/// where nothing listens yet can pick that same port as its source and connect to itself (TCP
/// simultaneous open); such a socket is not a listener and does not count.
pub fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port))
        .ok()
        .and_then(|socket| socket.local_addr().ok())
        .is_some_and(|local| local.port() != port)
}

pub fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_x402-gateway")
}

/// Writes `config` to a fresh temporary file.
pub fn write_config(config: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "x402-gw-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn rand_suffix() -> String {
    hex(&random_nonce()[..6])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Upstream, facilitator and gateway for one test.
pub struct Rig {
    pub upstream: Proc,
    pub facilitator: Proc,
    pub gateway: TestGateway,
    pub http: reqwest::Client,
}

/// The standard test configuration; `extra` is appended (more routes), `facilitator_extra` goes
/// into `[facilitator]`.
pub fn config(
    gateway_port: u16,
    upstream_port: u16,
    facilitator_port: u16,
    facilitator_extra: &str,
    extra: &str,
) -> String {
    let admin_port = free_port();
    format!(
        r#"unmatched = "proxy"
[server]
listen = "127.0.0.1:{gateway_port}"
threads = 2
[admin]
listen = "127.0.0.1:{admin_port}"
[upstream]
url = "http://127.0.0.1:{upstream_port}"
[facilitator]
kind = "x402"
url = "http://127.0.0.1:{facilitator_port}"
timeout = "2s"
{facilitator_extra}
[defaults]
network = "eip155:84532"
pay_to = "{PAY_TO}"
max_timeout_seconds = 120
[[routes]]
match = "GET /paid"
price = "$0.01"
description = "paid data"
[[routes]]
match = "* /paid/**"
price = "$0.01"
[[routes]]
match = "POST /upload"
price = "$0.01"
[[routes]]
match = "GET /before"
price = "$0.01"
settle = "before"
[[routes]]
match = "GET /free/**"
free = true
[[routes]]
match = "GET /multi"
accepts = [ {{ price = "$0.02" }}, {{ price = "$0.02", network = "eip155:196", asset = "USDT0" }} ]
{extra}
"#
    )
}

/// The admin port written into a configuration by [`config`].
pub fn admin_port(config: &str) -> u16 {
    listen_port_in(config, "[admin]").expect("an [admin] listen line")
}

impl Rig {
    pub async fn start() -> Self {
        Self::with("", "").await
    }

    pub async fn with(facilitator_extra: &str, extra: &str) -> Self {
        Self::edited(facilitator_extra, extra, |config| config).await
    }

    /// [`Rig::with`], with the configuration text passed through `edit` before the gateway starts.
    pub async fn edited(
        facilitator_extra: &str,
        extra: &str,
        edit: impl FnOnce(String) -> String,
    ) -> Self {
        let upstream = node("upstream.mjs", &["--port", "0"]);
        let facilitator = node("facilitator.mjs", &["--port", "0"]);
        let port = free_port();
        let text = config(
            port,
            upstream.port,
            facilitator.port,
            facilitator_extra,
            extra,
        );
        let gateway = TestGateway::builder(&edit(text)).start();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            upstream,
            facilitator,
            gateway,
            http,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.gateway.port)
    }

    pub async fn upstream_hits(&self) -> u64 {
        let v: Value = self
            .http
            .get(format!("http://127.0.0.1:{}/__hits", self.upstream.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["hits"].as_u64().unwrap()
    }

    pub async fn upstream_last(&self) -> Value {
        self.http
            .get(format!("http://127.0.0.1:{}/__last", self.upstream.port))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Facilitator call counts: (verify, settle).
    pub async fn facilitator_calls(&self) -> (u64, u64) {
        let v: Value = self
            .http
            .get(format!(
                "http://127.0.0.1:{}/__calls",
                self.facilitator.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (v["verify"].as_u64().unwrap(), v["settle"].as_u64().unwrap())
    }

    pub async fn facilitator_last(&self, endpoint: &str) -> Value {
        self.http
            .get(format!(
                "http://127.0.0.1:{}/__last/{endpoint}",
                self.facilitator.port
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn facilitator_mode(&self, modes: Value) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/__mode", self.facilitator.port))
            .json(&modes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// The v2 challenge of `path`.
    pub async fn challenge(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 402);
        decode_b64_json(r.headers()["payment-required"].to_str().unwrap())
    }

    /// A valid `PAYMENT-SIGNATURE` for the first option of `path`'s challenge.
    pub async fn pay_header(&self, path: &str) -> String {
        pay_header_for(&self.url(path)).await
    }
}

/// Asks `url` for its challenge and signs a valid `PAYMENT-SIGNATURE` for its first option.
pub async fn pay_header_for(url: &str) -> String {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 402, "{url} should ask for a payment");
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    let requirements: PaymentRequirements =
        serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    sign_v2(&requirements, |_| {})
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn decode_b64_json(text: &str) -> Value {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("standard base64");
    serde_json::from_slice(&bytes).expect("json")
}

pub fn encode_b64_json(value: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs a v2 payment for `accepted`; `tamper` may change the authorization before signing.
pub fn sign_v2(
    accepted: &PaymentRequirements,
    tamper: impl FnOnce(&mut x402_gateway::x402::Authorization),
) -> String {
    let wallet = Wallet::from_hex(BUYER_KEY).unwrap();
    let mut auth = wallet.authorize(accepted, now(), random_nonce());
    tamper(&mut auth);
    let chain_id = x402_gateway::x402::chain_id_of(&accepted.network).unwrap();
    let signature = wallet.sign(&auth, accepted, chain_id).unwrap();
    encode_b64_json(
        &json!({"x402Version": 2, "accepted": accepted, "payload": {"signature": signature, "authorization": auth}}),
    )
}

/// A v1 `X-PAYMENT` for the v1 body option.
pub fn sign_v1(v1_option: &Value) -> String {
    let requirements = PaymentRequirements {
        scheme: "exact".into(),
        network: "eip155:84532".into(),
        amount: v1_option["maxAmountRequired"].as_str().unwrap().into(),
        asset: v1_option["asset"].as_str().unwrap().into(),
        pay_to: v1_option["payTo"].as_str().unwrap().into(),
        max_timeout_seconds: v1_option["maxTimeoutSeconds"].as_u64().unwrap(),
        extra: v1_option["extra"].clone(),
    };
    let wallet = Wallet::from_hex(BUYER_KEY).unwrap();
    let auth = wallet.authorize(&requirements, now(), random_nonce());
    let signature = wallet.sign(&auth, &requirements, 84532).unwrap();
    encode_b64_json(
        &json!({"x402Version": 1, "scheme": "exact", "network": v1_option["network"],
        "payload": {"signature": signature, "authorization": auth}}),
    )
}

/// Reads a response head byte by byte from a raw socket, up to its blank line; `None` when the
/// connection ends first.
pub async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Reads the body that `head` (as [`read_head`] returned it) frames with its `Content-Length`.
pub async fn read_framed_body(stream: &mut tokio::net::TcpStream, head: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("a numeric Content-Length"))
        })
        .unwrap_or_else(|| panic!("an answer framed by its length: {head}"));
    let mut body = vec![0u8; length];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut body))
        .await
        .expect("the body in time")
        .expect("the whole body");
    body
}
