//! The admin API over HTTP on the real binary, after real paid requests through the gateway (the
//! stand-in facilitator), against both journals: the journal file and the PostgreSQL ledger.
//! Filters, cursor pagination, revenue totals, the payments needing attention, the token refused
//! and accepted, loopback only without a token, no secret in the configuration listing, and the
//! console's page served with its content policy.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use x402_gateway::buyer::Wallet;

const TOKEN: &str = "admin-tok-3b7e91f0c2";
const FACILITATOR_TOKEN: &str = "fac-bearer-a19d44";
const DB_PASSWORD: &str = "ledger-pw-5c0e77";

/// A route settled before the upstream is called, whose upstream then fails: a refund candidate.
const EXTRA_ROUTES: &str = r#"
[[routes]]
match = "GET /refundable/**"
price = "$0.01"
settle = "before"
"#;

/// A database on the machine's PostgreSQL, dropped when the test ends.
struct TestDatabase {
    name: String,
}

async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL on 127.0.0.1:5432: {e}"));
    tokio::spawn(connection);
    client
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

impl TestDatabase {
    async fn create() -> Self {
        let name = format!(
            "x402_admin_{}_{}",
            std::process::id(),
            x402_gateway::time::unix_now_ms()
        );
        pg(PG_ADMIN)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self { name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(PG_ADMIN, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

struct Setup {
    _upstream: Proc,
    facilitator: Proc,
    gateway: TestGateway,
    http: reqwest::Client,
}

/// Upstream, stand-in facilitator (behind a bearer token) and a gateway with `journal` (TOML)
/// and `admin` (keys for `[admin]`), the secrets given through the environment.
fn start(journal: &str, admin: &str) -> Setup {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let text = config(
        free_port(),
        upstream.port,
        facilitator.port,
        "bearer_token = \"${FACILITATOR_TOKEN}\"",
        &format!("{EXTRA_ROUTES}{journal}"),
    )
    .replacen("[admin]\n", &format!("[admin]\n{admin}"), 1);
    let gateway = TestGateway::builder(&text)
        .env("ADMIN_TOKEN", TOKEN)
        .env("FACILITATOR_TOKEN", FACILITATOR_TOKEN)
        .env("JOURNAL_DB_PASSWORD", DB_PASSWORD)
        .rust_log("info,pingora_core=warn,pingora_proxy=warn")
        .start();
    Setup {
        _upstream: upstream,
        facilitator,
        gateway,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    }
}

impl Setup {
    async fn pay(&self, path: &str) -> u16 {
        let url = self.gateway.url(path);
        let payment = pay_header_for(&url).await;
        self.http
            .get(&url)
            .header("PAYMENT-SIGNATURE", payment)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn facilitator_mode(&self, modes: Value) {
        let r = self
            .http
            .post(format!("http://127.0.0.1:{}/__mode", self.facilitator.port))
            .json(&modes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// `GET path` on the admin listener with `token` as the bearer token: status, headers, JSON.
    async fn get(
        &self,
        path: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        self.get_at(&self.gateway.admin_url(path), token).await
    }

    async fn get_at(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{url} answered {status} with no JSON: {text}"));
        (status, headers, body)
    }

    /// An API answer that must be 200.
    async fn api(&self, path: &str) -> Value {
        let (status, _, body) = self.get(path, Some(TOKEN)).await;
        assert_eq!(status, 200, "{path}: {body}\n{}", self.gateway.log());
        body
    }

    /// Every payment the API lists, walking the pages of `limit`.
    async fn all_payments(&self, filter: &str, limit: usize) -> Vec<Value> {
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/admin/api/payments?limit={limit}{filter}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.api(&path).await;
            let rows = page["payments"].as_array().unwrap();
            assert!(rows.len() <= limit);
            listed.extend(rows.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return listed,
            }
        }
    }
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Real payments of every outcome, then the whole API against them.
async fn exercise(setup: &Setup) {
    let payer = Wallet::from_hex(BUYER_KEY).unwrap().address();
    let before_payments = x402_gateway::time::rfc3339(x402_gateway::time::unix_now_ms() - 1000);

    // Settled: three on GET /paid, one on GET /multi ($0.02).
    for _ in 0..3 {
        assert_eq!(setup.pay("/paid").await, 200);
    }
    assert_eq!(setup.pay("/multi").await, 200);
    // Settled up front, then the upstream failed: the buyer may be owed a refund.
    assert_eq!(setup.pay("/refundable/status/500").await, 500);
    // Verified, the upstream failed, nothing charged.
    assert_eq!(setup.pay("/paid/status/500").await, 500);
    // The facilitator's settle answer is a 500: the outcome is unknown, the payment pending.
    setup
        .facilitator_mode(serde_json::json!({"settle": "http500"}))
        .await;
    assert_eq!(setup.pay("/paid").await, 504);
    setup
        .facilitator_mode(serde_json::json!({"settle": "normal"}))
        .await;

    // Every payment is journaled before its answer, but poll for the last ones' final lines.
    let deadline = Instant::now() + Duration::from_secs(10);
    let all = loop {
        let all = setup.all_payments("", 500).await;
        let states: Vec<&str> = all.iter().map(|p| p["state"].as_str().unwrap()).collect();
        if all.len() == 7 && !states.contains(&"verified") {
            break all;
        }
        assert!(Instant::now() < deadline, "payments listed: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let count = |state: &str| all.iter().filter(|p| p["state"] == state).count();
    assert_eq!(
        (count("settled"), count("not_charged"), count("pending")),
        (5, 1, 1),
        "{all:#?}"
    );
    for p in &all {
        assert!(
            p.get("key").is_none() && p.get("settle_request").is_none(),
            "{p}"
        );
        assert!(p["payer"].as_str().unwrap().eq_ignore_ascii_case(&payer));
    }
    let settled_paid = all
        .iter()
        .find(|p| p["state"] == "settled" && p["route"] == "GET /paid")
        .unwrap();
    assert_eq!(settled_paid["symbol"], "USDC");
    assert_eq!(settled_paid["display"], "0.01");
    assert!(settled_paid["transaction"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert_eq!(
        settled_paid["explorer_url"],
        format!(
            "https://sepolia.basescan.org/tx/{}",
            settled_paid["transaction"].as_str().unwrap()
        ),
        "the built-in explorer of Base Sepolia"
    );

    // Pagination: pages of two list every payment once, newest first, as one page does.
    let paged = setup.all_payments("", 2).await;
    assert_eq!(ids(&paged), ids(&all));
    assert_eq!(
        ids(&paged).into_iter().collect::<BTreeSet<_>>().len(),
        7,
        "no payment twice"
    );
    let firsts: Vec<&str> = paged
        .iter()
        .map(|p| p["first_time"].as_str().unwrap())
        .collect();
    assert!(firsts.windows(2).all(|w| w[0] >= w[1]), "{firsts:?}");

    // Filters.
    let settled = setup.all_payments("&state=settled", 500).await;
    assert_eq!(settled.len(), 5);
    let paid_route = setup
        .all_payments(&format!("&route={}", encode("GET /paid")), 500)
        .await;
    assert_eq!(paid_route.len(), 3 + 1);
    assert!(paid_route.iter().all(|p| p["route"] == "GET /paid"));
    let paid_settled = setup
        .all_payments(&format!("&route={}&state=settled", encode("GET /paid")), 1)
        .await;
    assert_eq!(paid_settled.len(), 3);
    let by_payer = setup
        .all_payments(
            &format!("&payer={}", payer.to_uppercase().replace("0X", "0x")),
            500,
        )
        .await;
    assert_eq!(by_payer.len(), 7, "payer matched in any case");
    let other = setup.all_payments(&format!("&payer={OTHER}"), 500).await;
    assert!(other.is_empty());
    let in_range = setup
        .all_payments(&format!("&from={}", encode(&before_payments)), 500)
        .await;
    assert_eq!(in_range.len(), 7);
    let before = setup
        .all_payments(&format!("&to={}", encode(&before_payments)), 500)
        .await;
    assert!(before.is_empty(), "{before:#?}");
    let future = setup
        .all_payments("&from=2999-01-01T00:00:00%2B02:00", 500)
        .await;
    assert!(future.is_empty());

    // Revenue: the settled payments' amounts, by route, network and asset, per bucket.
    let revenue = setup.api("/admin/api/revenue?bucket=hour").await;
    assert_eq!(revenue["bucket"], "hour");
    let totals = revenue["totals"].as_array().unwrap();
    assert_eq!(totals.len(), 1, "{revenue}");
    assert_eq!(totals[0]["amount"], "60000", "3 × 0.01 + 0.02 + 0.01");
    assert_eq!(totals[0]["display"], "0.06");
    assert_eq!(totals[0]["count"], 5);
    assert_eq!(totals[0]["network"], "eip155:84532");
    let route_total = |route: &str| -> (String, u64) {
        let r = revenue["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["route"] == route)
            .unwrap_or_else(|| panic!("{route} in {revenue}"));
        (
            r["amount"].as_str().unwrap().into(),
            r["count"].as_u64().unwrap(),
        )
    };
    assert_eq!(route_total("GET /paid"), ("30000".into(), 3));
    assert_eq!(route_total("GET /multi"), ("20000".into(), 1));
    assert_eq!(route_total("GET /refundable/**"), ("10000".into(), 1));
    let series_sum: u128 = revenue["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["amount"].as_str().unwrap().parse::<u128>().unwrap())
        .sum();
    assert_eq!(series_sum, 60000);
    let daily = setup
        .api(&format!(
            "/admin/api/revenue?bucket=day&route={}",
            encode("GET /paid")
        ))
        .await;
    assert_eq!(daily["totals"][0]["amount"], "30000");
    assert!(daily["series"][0]["start"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00.000Z"));
    let none = setup
        .api(&format!(
            "/admin/api/revenue?to={}",
            encode(&before_payments)
        ))
        .await;
    assert_eq!(none["totals"], serde_json::json!([]));

    // Payments needing attention: the refund candidate and the unknown outcome, nothing else.
    let attention = setup.api("/admin/api/attention").await;
    let mut sorted: Vec<(String, String, String)> = attention["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["attention"].as_str().unwrap().into(),
                p["state"].as_str().unwrap().into(),
                p["route"].as_str().unwrap().into(),
            )
        })
        .collect();

    sorted.sort();
    let expected: Vec<(String, String, String)> = [
        ("refund_candidate", "settled", "GET /refundable/**"),
        ("unknown_outcome", "pending", "GET /paid"),
    ]
    .iter()
    .map(|(a, s, r)| (a.to_string(), s.to_string(), r.to_string()))
    .collect();
    assert_eq!(sorted, expected, "{attention}");
    assert_eq!(attention["counts"]["refund_candidate"], 1);
    let refund = attention["payments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["attention"] == "refund_candidate")
        .unwrap();
    assert_eq!(refund["reason"], "upstream_status_500");

    // Health: the facilitator the probe reached, the journal kind.
    let health = setup.api("/admin/api/health").await;
    assert!(
        health["facilitators"]
            .as_object()
            .is_some_and(|f| !f.is_empty()),
        "{health}"
    );

    // The configuration: routes and prices, and no secret anywhere.
    let (status, _, listing) = setup.get("/admin/api/config", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let paid = listing["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "GET /paid")
        .unwrap();
    assert_eq!(paid["kind"], "priced");
    assert_eq!(paid["options"][0]["price"], "0.01");
    assert_eq!(paid["options"][0]["amount"], "10000");
    assert_eq!(listing["admin"]["token"], true);
    let text = listing.to_string();
    for secret in [TOKEN, FACILITATOR_TOKEN, DB_PASSWORD, "${"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
}

/// What both journals answer the same way: the token, errors, the console.
async fn check_access(setup: &Setup) {
    let (status, headers, body) = setup.get("/admin/api/payments", None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "unauthorized");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    let (status, _, body) = setup
        .get("/admin/api/config", Some("admin-tok-3b7e91f0c"))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _, _) = setup.get("/admin/api/health", Some(TOKEN)).await;
    assert_eq!(status, 200);

    let (status, _, body) = setup.get("/admin/api/nothing", Some(TOKEN)).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, _, body) = setup
        .get("/admin/api/payments?state=paid", Some(TOKEN))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let (status, _, body) = setup
        .get("/admin/api/payments?cursor=bm90LWEtY3Vyc29y", Some(TOKEN))
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_parameter"))
    );
    let r = setup
        .http
        .post(setup.gateway.admin_url("/admin/api/payments"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");

    // The probes never ask for the token.
    let (status, _, _) = setup.get("/healthz", None).await;
    assert_eq!(status, 200);

    // The console's page: served without data, under a policy that runs its own script only.
    let r = setup
        .http
        .get(setup.gateway.admin_url("/console"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let policy = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe-inline"),
        "{policy}"
    );
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = r.text().await.unwrap();
    assert!(html.contains("/console/console.js"));
    let js = setup
        .http
        .get(setup.gateway.admin_url("/console/console.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !js.contains(".innerHTML"),
        "the console never parses data as markup"
    );
}

#[tokio::test]
async fn the_admin_api_reads_the_journal_file() {
    // With the machine's Redis as the shared store, whose health the API reports too.
    let setup = start(
        &format!(
            "[journal]\npath = \"journal.jsonl\"\nreconcile_interval = \"1h\"\n\
             [redis]\nurl = \"redis://127.0.0.1:6379\"\nkey_prefix = \"admin-api-{}-{}:\"\n",
            std::process::id(),
            x402_gateway::time::unix_now_ms()
        ),
        "token = \"${ADMIN_TOKEN}\"\n",
    );
    check_access(&setup).await;
    exercise(&setup).await;
    let health = setup.api("/admin/api/health").await;
    assert_eq!(health["journal"], "file");
    assert_eq!(health["shared_store"]["reachable"], true, "{health}");
    assert!(health["shared_store"]["redis"]
        .as_str()
        .is_some_and(|r| r.contains("127.0.0.1:6379")));
    assert!(
        setup
            .gateway
            .log()
            .contains("admin API and console: [admin] token required"),
        "{}",
        setup.gateway.log()
    );
}

#[tokio::test]
async fn the_admin_api_reads_the_postgresql_ledger() {
    let db = TestDatabase::create().await;
    let setup = start(
        &format!(
            "[journal]\nurl = \"postgres://postgres:${{JOURNAL_DB_PASSWORD}}@127.0.0.1:5432/{}\"\npath = \"spool.jsonl\"\nreconcile_interval = \"1h\"\n",
            db.name
        ),
        "token = \"${ADMIN_TOKEN}\"\n",
    );
    check_access(&setup).await;
    exercise(&setup).await;
    assert_eq!(setup.api("/admin/api/health").await["journal"], "postgres");
    // The ledger holds what the API listed: one row per payment.
    let rows: i64 = pg(&format!("postgres://postgres@127.0.0.1:5432/{}", db.name))
        .await
        .query_one("SELECT count(*) FROM x402_payments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 7);
}

/// An address of this machine that is not loopback, if it has one.
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the route's source address.
    socket.connect("10.255.255.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn without_a_token_the_admin_api_answers_only_to_loopback_and_says_so_at_start_up() {
    let admin_port = free_port();
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let text = config(
        free_port(),
        upstream.port,
        facilitator.port,
        "",
        "[journal]\npath = \"journal.jsonl\"\n",
    );
    let start = text.find("[admin]\nlisten = \"").unwrap();
    let end = start + text[start..].find('\n').unwrap() + 1;
    let end = end + text[end..].find('\n').unwrap() + 1;
    let text = format!(
        "{}[admin]\nlisten = \"0.0.0.0:{admin_port}\"\n{}",
        &text[..start],
        &text[end..]
    );
    let gateway = TestGateway::builder(&text)
        .admin_port(admin_port)
        .rust_log("info,pingora_core=warn,pingora_proxy=warn")
        .start();
    let setup = Setup {
        _upstream: upstream,
        facilitator,
        gateway,
        http: reqwest::Client::new(),
    };
    let log = setup.gateway.log();
    assert!(
        log.contains("no [admin] token: the admin API answers only to loopback peers"),
        "{log}"
    );
    assert_eq!(setup.pay("/paid").await, 200);
    let (status, _, body) = setup.get("/admin/api/payments", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payments"].as_array().unwrap().len(), 1);
    let (status, _, listing) = setup.get("/admin/api/config", None).await;
    assert_eq!(status, 200);
    assert_eq!(listing["admin"]["token"], false);

    match non_loopback_address() {
        Some(ip) => {
            let url = format!("http://{ip}:{admin_port}/admin/api/payments");
            let (status, _, body) = setup.get_at(&url, None).await;
            assert_eq!(status, 403, "{url}: {body}");
            assert_eq!(body["error"], "loopback_only");
            // A token presented does not help when none is configured.
            let (status, _, _) = setup.get_at(&url, Some("anything")).await;
            assert_eq!(status, 403);
            // The probes still answer there.
            let probe = setup
                .http
                .get(format!("http://{ip}:{admin_port}/healthz"))
                .send()
                .await
                .unwrap();
            assert_eq!(probe.status(), 200);
        }
        None => {
            eprintln!("SKIPPED the non-loopback request: this machine has no address but loopback")
        }
    }
}
