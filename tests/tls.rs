//! TLS on the public port: `[server] cert` and `key`.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

#[tokio::test]
async fn the_gateway_serves_challenges_and_payments_over_tls() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();

    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let config_path = write_config("");
    let dir = config_path.parent().unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
    let config = config(port, upstream.port, facilitator.port, "", "").replace(
        "threads = 2",
        &format!(
            "threads = 2\ncert = \"{}\"\nkey = \"{}\"",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
    );
    let _gateway = TestGateway::builder(&config).start();

    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/paid");
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 402);
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    assert_eq!(
        challenge["resource"]["url"], url,
        "the resource URL says https"
    );
    let requirements = serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
    let r = client
        .get(&url)
        .header("PAYMENT-SIGNATURE", sign_v2(&requirements, |_| {}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}
