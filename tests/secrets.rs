//! Facilitator credentials never leave the gateway: not in its logs, not in `check`, not in any
//! response a client gets, whatever goes wrong, and not in the admin API's configuration listing.

mod common;
mod vendor;

use common::*;
use serde_json::json;
use vendor::*;

const SECRETS: [&str; 4] = [OKX_KEY, OKX_SECRET, OKX_PASSPHRASE, AWX_KEY];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows a credential: {text}");
    }
}

#[tokio::test]
async fn credentials_never_appear_in_logs_check_output_or_client_responses() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    let awx = agentwallex_emulator(&[]);
    let port = free_port();
    let facilitators = format!(
        r#"[[facilitators]]
name = "okx"
kind = "okx"
url = "http://127.0.0.1:{}"
api_key = "${{OKX_API_KEY}}"
secret_key = "${{OKX_SECRET_KEY}}"
passphrase = "${{OKX_PASSPHRASE}}"
networks = ["eip155:196"]
[[facilitators]]
name = "agentwallex"
kind = "agentwallex"
url = "http://127.0.0.1:{}/api/v1"
api_key = "${{AGENTWALLEX_API_KEY}}"
networks = ["eip155:84532"]
"#,
        okx.port, awx.port
    );
    let routes = "[[routes]]\nmatch = \"GET /x\"\nprice = \"$0.01\"\n\
                  [[routes]]\nmatch = \"GET /b\"\nprice = \"$0.01\"\nnetwork = \"eip155:84532\"\nasset = \"USDC\"\n";
    let config = vendor_config(port, upstream.port, &facilitators, routes);

    let (ok, stdout, stderr) = check(&config);
    assert!(ok, "{stderr}");
    assert_clean("check", &format!("{stdout}{stderr}"));

    let gateway = vendor_gateway(&config).start();
    let mut seen = String::new();
    let okx_url = format!("http://127.0.0.1:{}", okx.port);
    // Every way a facilitator call can go wrong, plus the good path.
    let trials = [
        ("/x", json!({})),
        ("/x", json!({"secret": "changed-secret-1"})),
        ("/x", json!({"passphrase": "changed-passphrase-1"})),
        ("/b", json!({})),
    ];
    for (path, creds) in trials {
        post_json(format!("{okx_url}/__creds"), creds).await;
        let url = gateway.url(path);
        let r = http()
            .get(&url)
            .header("PAYMENT-SIGNATURE", pay_exact(&accepted(&url).await))
            .send()
            .await
            .unwrap();
        seen.push_str(&format!("{:?}", r.headers()));
        seen.push_str(&r.text().await.unwrap());
    }
    for mode in ["forbidden", "http500", "garbage", "ratelimit"] {
        set_mode(&awx, json!({"verify": mode})).await;
        let url = gateway.url("/b");
        let r = http()
            .get(&url)
            .header("PAYMENT-SIGNATURE", pay_exact(&accepted(&url).await))
            .send()
            .await
            .unwrap();
        seen.push_str(&r.text().await.unwrap());
    }
    assert!(seen.contains("facilitator_credentials"), "{seen}");
    assert_clean("client responses", &seen);
    // The operator's view of the configuration names the facilitators, never their credentials.
    let listing = http()
        .get(gateway.admin_url("/admin/api/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(listing.status(), 200);
    let listing = listing.text().await.unwrap();
    assert!(listing.contains("\"agentwallex\""), "{listing}");
    assert_clean("the admin API's configuration", &listing);
    let log = gateway.log();
    assert!(log.contains("refused the gateway's credentials"), "{log}");
    assert_clean("the gateway log", &log);
}
