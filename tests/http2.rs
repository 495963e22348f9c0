//! HTTP/2 to clients (`[server] http2 = true`): h2c with prior knowledge on the plain listener,
//! ALPN `h2` with TLS, and the same challenges, payments and receipts as over HTTP/1.1. Driven
//! with curl (libcurl's nghttp2), as clients speak it.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use std::process::Command;

/// One request with curl: (exit success, HTTP version, status, response head, body).
fn curl(args: &[&str]) -> (bool, String, u16, String, String) {
    let dir = tempfile_dir();
    let head = dir.join("head.txt");
    let body = dir.join("body.txt");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_version} %{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let written = String::from_utf8_lossy(&out.stdout).to_string();
    let (version, status) = written.split_once(' ').unwrap_or(("", "0"));
    let answer = (
        out.status.success(),
        version.to_string(),
        status.trim().parse().unwrap_or(0),
        std::fs::read_to_string(&head).unwrap_or_default(),
        std::fs::read_to_string(&body).unwrap_or_default(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    answer
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("x402-h2-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The value of header `name` in a response head (names compare case-insensitively: HTTP/2
/// writes them lower case, HTTP/1.1 as the gateway spelled them).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn hits(upstream_port: u16) -> u64 {
    let r: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{upstream_port}/__hits"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["hits"].as_u64().unwrap()
}

#[tokio::test]
async fn h2c_with_prior_knowledge_gets_the_challenge_and_a_paid_answer_with_its_receipt() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let config = config(port, upstream.port, facilitator.port, "", "")
        .replace("threads = 2", "threads = 2\nhttp2 = true");
    let _gateway = TestGateway::builder(&config).start();
    let url = format!("http://127.0.0.1:{port}/paid");

    let (ok, version, status, head, _) = curl(&["--http2-prior-knowledge", &url]);
    assert!(ok, "{head}");
    assert_eq!((version.as_str(), status), ("2", 402), "{head}");
    let challenge = decode_b64_json(header(&head, "payment-required").expect("challenge"));
    assert_eq!(hits(upstream.port).await, 0, "the upstream saw nothing");

    let requirements = serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let payment = format!("payment-signature: {}", sign_v2(&requirements, |_| {}));
    let (ok, version, status, head, body) =
        curl(&["--http2-prior-knowledge", "-H", &payment, &url]);
    assert!(ok, "{head}");
    assert_eq!((version.as_str(), status), ("2", 200), "{head}{body}");
    let receipt = decode_b64_json(header(&head, "payment-response").expect("receipt"));
    assert_eq!(receipt["success"], true);
    assert_eq!(hits(upstream.port).await, 1, "proxied once");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        echo["headers"].get("payment-signature").is_none(),
        "the payment header stays at the gateway: {echo}"
    );

    // The same payment again over h2 is a replay, refused before the upstream.
    let (_, _, status, head, _) = curl(&["--http2-prior-knowledge", "-H", &payment, &url]);
    assert_eq!(status, 402, "{head}");
    assert_eq!(hits(upstream.port).await, 1);
    // HTTP/1.1 still works on the same port.
    let (_, version, status, _, _) = curl(&["--http1.1", &url]);
    assert_eq!((version.as_str(), status), ("1.1", 402));
}

#[tokio::test]
async fn without_http2_the_plain_listener_speaks_http1_only() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let config = config(port, upstream.port, facilitator.port, "", "");
    let _gateway = TestGateway::builder(&config).start();
    let url = format!("http://127.0.0.1:{port}/paid");
    let (ok, version, _, _, _) = curl(&["--http2-prior-knowledge", &url]);
    assert!(!ok || version != "2", "h2c is opt-in");
    assert_eq!(hits(upstream.port).await, 0);
}

#[tokio::test]
async fn tls_offers_h2_by_alpn_when_asked_and_http1_otherwise() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (curl) wants a CA that may sign certificates, named apart from its leaf.
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "x402-gateway test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let config_path = write_config("");
    let dir = config_path.parent().unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let ca_file = dir.join("ca.pem").display().to_string();
    for (http2, expected) in [(true, "2"), (false, "1.1")] {
        let port = free_port();
        let config = config(port, upstream.port, facilitator.port, "", "").replace(
            "threads = 2",
            &format!(
                "threads = 2\nhttp2 = {http2}\ncert = \"{}\"\nkey = \"{}\"",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        );
        let _gateway = TestGateway::builder(&config).start();
        let url = format!("https://localhost:{port}/paid");
        let (ok, version, status, head, _) = curl(&["--http2", "--cacert", &ca_file, &url]);
        assert!(ok, "{head}");
        assert_eq!(
            (version.as_str(), status),
            (expected, 402),
            "http2 = {http2}: {head}"
        );
        let challenge = decode_b64_json(header(&head, "payment-required").expect("challenge"));
        assert_eq!(challenge["resource"]["url"], url);
    }
    assert_eq!(hits(upstream.port).await, 0);
}

/// `GET path` on an h2c-only server (the upstream under `--h2c`), as JSON.
fn h2c_json(port: u16, path: &str) -> serde_json::Value {
    let (ok, version, status, head, body) = curl(&[
        "--http2-prior-knowledge",
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    assert!(ok && version == "2" && status == 200, "{head}{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn an_h2c_upstream_is_reached_over_http2_for_free_and_paid_requests_from_http1_clients() {
    let upstream = node("upstream.mjs", &["--port", "0", "--h2c"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let config = config(port, upstream.port, facilitator.port, "", "").replace(
        &format!("url = \"http://127.0.0.1:{}\"", upstream.port),
        &format!("url = \"http://127.0.0.1:{}\"\nhttp2 = true", upstream.port),
    );
    assert!(config.contains("http2 = true"), "{config}");
    let _gateway = TestGateway::builder(&config).start();
    let base = format!("http://127.0.0.1:{port}");

    let (ok, version, status, head, body) = curl(&["--http1.1", &format!("{base}/free")]);
    assert!(ok, "{head}");
    assert_eq!((version.as_str(), status), ("1.1", 200), "{head}{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        echo["httpVersion"], "2.0",
        "the upstream was spoken to over h2: {echo}"
    );

    let url = format!("{base}/paid");
    let (_, _, status, head, _) = curl(&["--http1.1", &url]);
    assert_eq!(status, 402, "{head}");
    assert_eq!(
        h2c_json(upstream.port, "/__hits")["hits"],
        1,
        "only the free request"
    );
    let challenge = decode_b64_json(header(&head, "payment-required").expect("challenge"));
    let requirements = serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let payment = format!("payment-signature: {}", sign_v2(&requirements, |_| {}));
    let (ok, _, status, head, body) = curl(&["--http1.1", "-H", &payment, &url]);
    assert!(ok, "{head}");
    assert_eq!(status, 200, "{head}{body}");
    let receipt = decode_b64_json(header(&head, "payment-response").expect("receipt"));
    assert_eq!(receipt["success"], true);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["httpVersion"], "2.0", "{echo}");
    assert!(
        echo["headers"].get("payment-signature").is_none(),
        "the payment header stays at the gateway: {echo}"
    );
    assert_eq!(
        echo["headers"][":authority"],
        format!("127.0.0.1:{}", upstream.port)
    );
    assert_eq!(
        h2c_json(upstream.port, "/__hits")["hits"],
        2,
        "proxied once"
    );
}
