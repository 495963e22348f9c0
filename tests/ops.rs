//! Operations against the real binary: admin endpoints, metrics, the settlement journal across
//! `kill -9`, receipts, hot reload, graceful shutdown, the browser paywall and discovery.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use x402_gateway::x402::PaymentRequirements;

/// A [`TestGateway`] that counts as started once `/readyz` says ready, with the admin, payment
/// and signal calls these tests make.
struct Gateway {
    process: TestGateway,
    http: reqwest::Client,
}

impl Gateway {
    /// Starts the binary on `config_path` with `args` before `run`, and waits until `/readyz`
    /// says ready.
    async fn start_at(config_path: &Path, args: &[&str]) -> Self {
        let process = TestGateway::builder_at(config_path)
            .args(args)
            .rust_log("info")
            .start();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let gw = Self { process, http };
        gw.wait_ready(true, Duration::from_secs(20)).await;
        gw
    }

    async fn start(config: &str) -> Self {
        Self::start_at(&write_config(config), &[]).await
    }

    fn config(&self) -> &Path {
        self.process.config_path()
    }

    fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    fn admin_url(&self, path: &str) -> String {
        self.process.admin_url(path)
    }

    async fn readyz(&self) -> Option<(u16, Value)> {
        let r = self.http.get(self.admin_url("/readyz")).send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.ok()?))
    }

    async fn wait_ready(&self, ready: bool, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            if let Some((status, body)) = self.readyz().await {
                if (status == 200) == ready {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "readiness never became {ready}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The metrics once `series` reached `value` (they are updated as requests end).
    async fn metrics_when(&self, series: &str, value: f64) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = self.metrics().await;
            if sample(&m, series) >= value || Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_text(&self) -> String {
        self.process.log()
    }

    fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    async fn challenge(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 402, "{path}");
        decode_b64_json(r.headers()["payment-required"].to_str().unwrap())
    }

    async fn pay_header(&self, path: &str) -> String {
        let challenge = self.challenge(path).await;
        let requirements: PaymentRequirements =
            serde_json::from_value(challenge["accepts"][0].clone()).unwrap();
        sign_v2(&requirements, |_| {})
    }

    async fn paid_get(&self, path: &str, payment: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .header("PAYMENT-SIGNATURE", payment)
            .send()
            .await
            .unwrap()
    }
}

/// The value of one sample of the Prometheus text, 0 when absent.
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Upstream and facilitator support processes with a standard configuration.
struct Support {
    upstream: Proc,
    facilitator: Proc,
}

impl Support {
    fn start() -> Self {
        Self {
            upstream: node("upstream.mjs", &["--port", "0"]),
            facilitator: node("facilitator.mjs", &["--port", "0"]),
        }
    }

    fn config(&self, facilitator_extra: &str, extra: &str) -> String {
        config(
            free_port(),
            self.upstream.port,
            self.facilitator.port,
            facilitator_extra,
            extra,
        )
    }

    async fn facilitator_mode(&self, modes: Value) {
        let r = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/__mode", self.facilitator.port))
            .json(&modes)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
}

#[tokio::test]
async fn metrics_follow_challenges_payments_revenue_and_replays() {
    let support = Support::start();
    let gw = Gateway::start(&support.config("", "")).await;

    let payment = gw.pay_header("/paid").await; // one 402
    let r = gw.http.get(gw.url("/paid")).send().await.unwrap(); // two
    assert_eq!(r.status(), 402);
    assert_eq!(gw.paid_get("/paid", &payment).await.status(), 200);
    assert_eq!(gw.paid_get("/paid", &payment).await.status(), 402); // replay: three
    assert_eq!(
        gw.http
            .get(gw.url("/free/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Requests are counted in their last phase, just after the response: wait for the last one.
    let m = gw
        .metrics_when(
            r#"x402_requests_total{outcome="free",route="GET /free/**"}"#,
            1.0,
        )
        .await;
    let route = r#"route="GET /paid""#;
    assert_eq!(
        sample(&m, &format!("x402_payment_required_total{{{route}}}")),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_requests_total{outcome="challenged",route="GET /paid"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_requests_total{outcome="paid",route="GET /paid"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_requests_total{outcome="refused",route="GET /paid"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_requests_total{outcome="free",route="GET /free/**"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&m, r#"x402_payments_verified_total{facilitator="x402"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"x402_payments_settled_total{facilitator="x402"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_payments_failed_total{facilitator="x402",reason="payment_already_used"}"#
        ),
        1.0
    );
    assert_eq!(sample(&m, "x402_replays_refused_total"), 1.0);
    assert_eq!(
        sample(
            &m,
            r#"x402_revenue_atomic_total{asset="USDC",network="eip155:84532",route="GET /paid"}"#
        ),
        10000.0
    );
    assert_eq!(
        sample(
            &m,
            r#"x402_facilitator_request_duration_seconds_count{facilitator="x402",operation="verify"}"#
        ),
        1.0
    );
    assert!(sample(&m, "x402_upstream_response_duration_seconds_count") >= 2.0);

    // A second payment moves the counters on.
    let payment = gw.pay_header("/paid").await;
    assert_eq!(gw.paid_get("/paid", &payment).await.status(), 200);
    let m = gw.metrics().await;
    assert_eq!(
        sample(
            &m,
            r#"x402_revenue_atomic_total{asset="USDC",network="eip155:84532",route="GET /paid"}"#
        ),
        20000.0
    );
    assert_eq!(
        sample(&m, r#"x402_payments_settled_total{facilitator="x402"}"#),
        2.0
    );
}

#[tokio::test]
async fn readiness_flips_when_the_facilitator_goes_away_and_comes_back() {
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let facilitator_port = facilitator.port;
    let text = config(free_port(), upstream.port, facilitator_port, "", "")
        .replace("[admin]\n", "[admin]\nprobe_interval = \"200ms\"\n");
    let gw = Gateway::start(&text).await;
    let body = gw.wait_ready(true, Duration::from_secs(5)).await;
    assert_eq!(body["facilitators"]["x402"]["reachable"], true);

    drop(facilitator);
    let body = gw.wait_ready(false, Duration::from_secs(5)).await;
    assert_eq!(body["facilitators"]["x402"]["reachable"], false, "{body}");
    assert_eq!(body["config"], "loaded");
    // Liveness is about the gateway itself, not its dependencies.
    let live = gw.http.get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(live.status(), 200);

    let _back = node(
        "facilitator.mjs",
        &["--port", &facilitator_port.to_string()],
    );
    gw.wait_ready(true, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn admin_port_serves_health_and_metrics_but_never_the_api() {
    let support = Support::start();
    let gw = Gateway::start(&support.config("", "")).await;
    let r = gw.http.get(gw.admin_url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = gw.http.get(gw.admin_url("/paid")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = gw.http.get(gw.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("x402_config_loaded_timestamp_seconds"));
    // The public port does not serve the admin endpoints: /healthz is just another path there.
    let r = gw.http.get(gw.url("/metrics")).send().await.unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/metrics", "proxied to the upstream");
}

#[tokio::test]
async fn journal_survives_kill_9_and_pending_settlements_resume() {
    let support = Support::start();
    let text = support.config("", "");
    let path = write_config(&text);
    let journal = path.with_file_name("journal.jsonl");
    let text = text.replace(
        "[admin]\n",
        "[journal]\npath = \"journal.jsonl\"\nreconcile_interval = \"200ms\"\n[admin]\n",
    );
    std::fs::write(&path, &text).unwrap();
    let mut gw = Gateway::start_at(&path, &[]).await;

    let settled = gw.pay_header("/paid").await;
    let r = gw.paid_get("/paid", &settled).await;
    assert_eq!(r.status(), 200);
    let tx = decode_b64_json(r.headers()["payment-response"].to_str().unwrap())["transaction"]
        .as_str()
        .unwrap()
        .to_string();

    // The facilitator takes the settlement and never answers: the outcome is unknown.
    support
        .facilitator_mode(serde_json::json!({"settle": "hang"}))
        .await;
    let unknown = gw.pay_header("/paid").await;
    let r = gw.paid_get("/paid", &unknown).await;
    assert_eq!(r.status(), 504);

    gw.process.kill(); // SIGKILL

    let lines: Vec<Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let states: Vec<&str> = lines.iter().map(|l| l["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["verified", "settled", "verified", "pending"]);
    assert_eq!(lines[1]["transaction"], tx);
    assert_eq!(lines[3]["reason"], "facilitator_timeout");
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    assert!(!journal_text.contains("signature"), "{journal_text}");

    support
        .facilitator_mode(serde_json::json!({"settle": "normal"}))
        .await;
    let gw = Gateway::start_at(&path, &[]).await;
    assert!(gw
        .log_text()
        .contains("pending settlements from an earlier run resume reconciliation"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if sample(&m, r#"x402_reconciliations_total{result="unknown"}"#) >= 1.0 {
            assert_eq!(sample(&m, "x402_journal_pending_settlements"), 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "no reconciliation attempt: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The restarted gateway still refuses both authorizations.
    for payment in [&settled, &unknown] {
        let r = gw.paid_get("/paid", payment).await;
        assert_eq!(r.status(), 402);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], "payment_already_used");
    }

    // receipts: one row per payment, in its latest state.
    let out = Command::new(gateway_bin())
        .args(["receipts", "--format", "json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["state"], "settled");
    assert_eq!(rows[0]["transaction"], tx);
    assert_eq!(rows[0]["amount"], "10000");
    assert_eq!(rows[0]["route"], "GET /paid");
    assert_eq!(rows[1]["state"], "pending");

    let out = Command::new(gateway_bin())
        .args(["receipts", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let mut csv_lines = csv.lines();
    assert_eq!(
        csv_lines.next(),
        Some(
            "time,id,state,route,payer,amount,asset,network,pay_to,transaction,facilitator,reason"
        )
    );
    assert_eq!(csv_lines.count(), 2);

    let out = Command::new(gateway_bin())
        .args(["receipts", "--since", "2999-01-01", "--journal"])
        .arg(&journal)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

/// Sends requests on `workers` tasks until `stop`; returns (ok, unexpected) counts.
async fn load(gw: &Gateway, stop: Duration) -> (usize, Vec<String>) {
    let deadline = Instant::now() + stop;
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let http = gw.http.clone();
        let free = gw.url(&format!("/free/{worker}"));
        let paid = gw.url("/paid");
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            let mut bad = Vec::new();
            while Instant::now() < deadline {
                match http.get(&free).send().await {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => bad.push(format!("free: {}", r.status())),
                    Err(e) => bad.push(format!("free: {e}")),
                }
                match http.get(&paid).send().await {
                    Ok(r) if r.status() == 402 => ok += 1,
                    Ok(r) => bad.push(format!("paid: {}", r.status())),
                    Err(e) => bad.push(format!("paid: {e}")),
                }
            }
            (ok, bad)
        }));
    }
    let mut ok = 0;
    let mut bad = Vec::new();
    for t in tasks {
        let (o, b) = t.await.unwrap();
        ok += o;
        bad.extend(b);
    }
    (ok, bad)
}

async fn wait_for_amount(gw: &Gateway, path: &str, amount: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.challenge(path).await["accepts"][0]["amount"] != amount {
        assert!(
            Instant::now() < deadline,
            "{path} never cost {amount}; log:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reload_under_load_loses_no_request() {
    let support = Support::start();
    let text = support.config("", "");
    let gw = Gateway::start(&text).await;
    let reloads = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // SIGHUP after an in-place edit...
        std::fs::write(
            gw.config(),
            text.replace(
                "price = \"$0.01\"\ndescription = \"paid data\"",
                "price = \"$0.02\"\ndescription = \"paid data\"",
            ),
        )
        .unwrap();
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(700)).await;
        // ...and a plain file change, picked up without a signal.
        std::fs::write(
            gw.config(),
            text.replace(
                "price = \"$0.01\"\ndescription = \"paid data\"",
                "price = \"$0.03\"\ndescription = \"paid data\"",
            ),
        )
        .unwrap();
    };
    let ((ok, bad), ()) = tokio::join!(load(&gw, Duration::from_secs(3)), reloads);
    assert!(
        bad.is_empty(),
        "{} failed of {}: {:?}",
        bad.len(),
        ok + bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert!(ok > 50, "only {ok} requests");
    wait_for_amount(&gw, "/paid", "30000").await;
    let m = gw.metrics().await;
    assert!(
        sample(&m, r#"x402_config_reloads_total{result="success"}"#) >= 2.0,
        "{m}"
    );
}

#[tokio::test]
async fn invalid_reload_is_refused_and_the_old_routes_keep_serving() {
    let support = Support::start();
    let text = support.config("", "");
    let gw = Gateway::start(&text).await;
    let broken = text.replace("description = \"paid data\"", "descripton = \"paid data\"");
    std::fs::write(gw.config(), &broken).unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = gw.metrics().await;
        if sample(&m, r#"x402_config_reloads_total{result="failure"}"#) >= 1.0 {
            assert_eq!(
                sample(&m, r#"x402_config_reloads_total{result="success"}"#),
                0.0
            );
            break;
        }
        assert!(Instant::now() < deadline, "no failed reload counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = broken
        .lines()
        .position(|l| l.starts_with("descripton"))
        .unwrap()
        + 1;
    let log = gw.log_text();
    assert!(log.contains("configuration reload refused"), "{log}");
    assert!(log.contains(&format!("gateway.toml:{line}:1")), "{log}");
    assert!(log.contains("unknown field"), "{log}");
    let challenge = gw.challenge("/paid").await;
    assert_eq!(challenge["accepts"][0]["amount"], "10000");
    assert_eq!(challenge["resource"]["description"], "paid data");
    // Still ready: the old configuration is a good one.
    assert_eq!(gw.readyz().await.unwrap().0, 200);
}

#[tokio::test]
async fn configmap_symlink_swap_is_picked_up() {
    let support = Support::start();
    let text = support.config("", "");
    let dir = write_config("").parent().unwrap().join("configmap");
    std::fs::create_dir_all(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/gateway.toml"), &text).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.toml", dir.join("gateway.toml")).unwrap();
    let gw = Gateway::start_at(&dir.join("gateway.toml"), &[]).await;
    assert_eq!(gw.challenge("/paid").await["accepts"][0]["amount"], "10000");

    // What the kubelet does: write a new directory, then swap `..data` atomically.
    std::fs::create_dir_all(dir.join("..v2")).unwrap();
    std::fs::write(
        dir.join("..v2/gateway.toml"),
        text.replace(
            "price = \"$0.01\"\ndescription = \"paid data\"",
            "price = \"$0.05\"\ndescription = \"paid data\"",
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    wait_for_amount(&gw, "/paid", "50000").await;
}

#[tokio::test]
async fn sigterm_under_load_fails_no_in_flight_request() {
    let support = Support::start();
    let text = support
        .config("", "")
        .replace("threads = 2\n", "threads = 2\ngrace_period = \"8s\"\n");
    let mut gw = Gateway::start(&text).await;
    let mut payments = Vec::new();
    for _ in 0..6 {
        payments.push(gw.pay_header("/paid/slow").await);
    }
    let mut requests = Vec::new();
    for payment in payments {
        let http = gw.http.clone();
        let url = gw.url("/paid/slow");
        requests.push(tokio::spawn(async move {
            let r = http
                .get(url)
                .header("PAYMENT-SIGNATURE", payment)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let settled = r.headers().contains_key("payment-response");
            Ok::<_, String>((r.status().as_u16(), settled))
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // the upstream takes 1.5 s
    let signalled = Instant::now();
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", gw.process.port)).is_err(),
        "still accepting after SIGTERM"
    );
    for r in requests {
        assert_eq!(r.await.unwrap(), Ok((200, true)));
    }
    let status = loop {
        if let Some(status) = gw.process.try_wait() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(8),
            "still running after the grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "an idle gateway should not wait out its grace period: {:?}",
        signalled.elapsed()
    );
}

#[tokio::test]
async fn browsers_get_an_html_paywall_and_programs_get_json() {
    let support = Support::start();
    let gw = Gateway::start(&support.config(
        "",
        "[[routes]]\nmatch = \"GET /fancy\"\nprice = \"$0.25\"\ndescription = \"<b>\\\"Tom & Jerry\\\"</b>\"\n",
    ))
    .await;
    let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let r = gw
        .http
        .get(gw.url("/fancy?x=<script>"))
        .header("Accept", browser)
        .header("User-Agent", "Mozilla/5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let challenge = decode_b64_json(r.headers()["payment-required"].to_str().unwrap());
    assert_eq!(challenge["accepts"][0]["amount"], "250000");
    let page = r.text().await.unwrap();
    for expected in [
        "$0.25",
        "250000",
        "eip155:84532",
        "0x036CbD53842c5426634e7929541eC2318f3dCF7e",
        PAY_TO,
        "x402",
        "PAYMENT-SIGNATURE",
        "&lt;b&gt;&quot;Tom &amp; Jerry&quot;&lt;/b&gt;",
    ] {
        assert!(page.contains(expected), "{expected} missing from\n{page}");
    }
    assert!(
        !page.contains("<b>\"Tom"),
        "configuration text must be escaped"
    );
    assert!(!page.contains("<script>"), "the URL must be escaped");

    for accept in ["*/*", "application/json", "application/json, text/html"] {
        let r = gw
            .http
            .get(gw.url("/fancy"))
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 402);
        assert_eq!(r.headers()["content-type"], "application/json", "{accept}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["x402Version"], 1);
    }
}

#[tokio::test]
async fn discovery_lists_priced_routes_and_can_be_switched_off() {
    let support = Support::start();
    let gw = Gateway::start(&support.config("", "")).await;
    let r = gw
        .http
        .get(gw.url("/.well-known/x402"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["x402Version"], 2);
    let resources = doc["resources"].as_array().unwrap();
    let routes: Vec<&str> = resources
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        [
            "GET /paid",
            "* /paid/**",
            "POST /upload",
            "GET /before",
            "GET /multi"
        ]
    );
    assert_eq!(resources[0]["accepts"][0]["amount"], "10000");
    assert_eq!(resources[0]["accepts"][0]["payTo"], PAY_TO);
    assert_eq!(resources[0]["prices"][0]["price"], "0.01");
    assert_eq!(resources[0]["description"], "paid data");
    assert_eq!(resources[4]["accepts"].as_array().unwrap().len(), 2);
    drop(gw);

    let off = support.config("", "[discovery]\nenabled = false\n");
    let gw = Gateway::start(&off).await;
    let r = gw
        .http
        .get(gw.url("/.well-known/x402"))
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["path"], "/.well-known/x402", "proxied like any path");
}

#[tokio::test]
async fn json_logs_have_one_line_per_payment_and_no_secrets() {
    let support = Support::start();
    let text = support.config("bearer_token = \"very-secret-token\"", "");
    let path = write_config(&text);
    let gw = Gateway::start_at(&path, &["--log-format", "json"]).await;
    let payment = gw.pay_header("/paid").await;
    let r = gw.paid_get("/paid", &payment).await;
    assert_eq!(r.status(), 200);
    let broken = text.replace("[upstream]", "[upstream]\nbogus = 1");
    std::fs::write(&path, broken).unwrap();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = gw.log_text();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect();
    let payment_lines: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "payment")
        .collect();
    assert_eq!(payment_lines.len(), 1, "{log}");
    let fields = &payment_lines[0]["fields"];
    assert_eq!(
        fields["payer"],
        "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
    );
    assert_eq!(fields["amount"], "10000");
    assert_eq!(fields["outcome"], "Settled");
    assert!(fields["tx"].as_str().unwrap().starts_with("0x"));
    let signature = decode_b64_json(&payment)["payload"]["signature"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!log.contains(&signature), "signature logged");
    assert!(!log.contains(&payment[..40]), "payment header logged");
    assert!(!log.contains("very-secret-token"), "secret logged");
}
