//! Several gateway processes sharing one real redis-server behave as one gateway: one payment is
//! served once whichever replica each copy reaches, and when Redis stops answering, priced routes
//! fail closed while free routes and challenges keep working. The facilitator is the OKX emulator,
//! whose asynchronous settlement answers success before anything is final, so nothing but the
//! gateway stands between concurrent copies and a second delivery.

mod common;
mod vendor;

use common::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vendor::*;

/// A redis-server of this test on a free port, without persistence; killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
    password: Option<&'static str>,
}

impl Redis {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// With `password`, clients must authenticate.
    fn start_with(password: Option<&'static str>) -> Self {
        let mut redis = Self {
            child: None,
            port: free_port(),
            password,
        };
        redis.restart();
        redis
    }

    /// The `[redis]` settings of a gateway using this server, as its configuration reads them.
    fn settings(&self) -> x402_gateway::config::RedisConfig {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n[redis]\nurl = \"{}\"\n",
            self.url()
        );
        x402_gateway::config::GatewayConfig::parse(&text, std::path::Path::new("g.toml"), &|_| None)
            .expect("a valid configuration")
            .redis
            .expect("[redis] is set")
    }

    /// Starts (again) on the same port and waits for `PING`.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(
                self.password
                    .map(|p| ["--requirepass", p])
                    .into_iter()
                    .flatten(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut socket) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
        // Without the password Redis answers -NOAUTH: it is up all the same.
        let mut reply = [0u8; 1];
        socket.write_all(b"PING\r\n").is_ok()
            && socket.read_exact(&mut reply).is_ok()
            && (&reply == b"+" || &reply == b"-")
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let status = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
    }

    /// Freezes the process: connections stay open and nothing answers.
    fn pause(&self) {
        self.signal("-STOP");
    }

    fn resume(&self) {
        self.signal("-CONT");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused process ignores nothing but SIGKILL; continue it so it exits cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}

const ROUTES: &str = r#"
[[routes]]
match = "GET /api/data"
price = "$0.01"
description = "Premium data endpoint"
[[routes]]
match = "GET /api/slow"
price = "$0.01"
[[routes]]
match = "GET /free/**"
free = true
"#;

/// Upstream, OKX emulator, Redis and `replicas` gateways sharing them.
struct Replicas {
    upstream: Proc,
    okx: Proc,
    redis: Redis,
    gateways: Vec<TestGateway>,
}

impl Replicas {
    fn start(replicas: usize, extra: &str) -> Self {
        Self::sharing(replicas, extra, true)
    }

    /// `shared`: the replicas point at the Redis; otherwise each keeps its own state.
    fn sharing(replicas: usize, extra: &str, shared: bool) -> Self {
        let upstream = node("upstream.mjs", &["--port", "0"]);
        let okx = okx_emulator(&[]);
        let redis = Redis::start();
        let prefix = format!("test{}:", free_port());
        let redis_table = if shared {
            format!(
                "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"250ms\"\n",
                redis.url()
            )
        } else {
            String::new()
        };
        let gateways = (0..replicas)
            .map(|replica| {
                let port = free_port();
                let config = vendor_config(
                    port,
                    upstream.port,
                    &okx_facilitator(okx.port, ""),
                    &format!("{ROUTES}{extra}\n{redis_table}"),
                )
                .replace("[admin]\n", "[admin]\nprobe_interval = \"200ms\"\n");
                vendor_gateway(&config)
                    .name(format!("replica {replica}"))
                    .start()
            })
            .collect();
        Self {
            upstream,
            okx,
            redis,
            gateways,
        }
    }

    fn url(&self, replica: usize, path: &str) -> String {
        self.gateways[replica % self.gateways.len()].url(path)
    }

    async fn readyz(&self, replica: usize) -> (u16, Value) {
        let r = http()
            .get(self.gateways[replica].admin_url("/readyz"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn wait_ready(&self, replica: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.readyz(replica).await;
            if status == 200 {
                return;
            }
            assert!(Instant::now() < deadline, "replica never ready: {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn settles(&self) -> u64 {
        control(&self.okx, "/__calls").await["settle"]
            .as_u64()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_copies_of_one_payment_across_replicas_are_served_once() {
    let rig = Replicas::start(3, "");
    for replica in 0..3 {
        rig.wait_ready(replica).await;
    }
    let payment = pay_exact(&accepted(&rig.url(0, "/api/data")).await);
    let copies = (0..30).map(|i| {
        let url = rig.url(i, "/api/data");
        let payment = payment.clone();
        async move { paid_get(&url, &payment).await }
    });
    let answers = futures::future::join_all(copies).await;
    let delivered: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 200).collect();
    assert_eq!(delivered.len(), 1, "exactly one delivery: {answers:?}");
    assert!(
        delivered[0].1.is_some(),
        "the delivery carries PAYMENT-RESPONSE"
    );
    for (status, _, body) in &answers {
        assert!(
            [200, 402, 409].contains(status),
            "the other copies are refused: {status} {body}"
        );
    }
    assert_eq!(upstream_hits(&rig.upstream).await, 1, "one upstream hit");
    assert_eq!(rig.settles().await, 1, "one settlement");

    // The settled payment, replayed at each replica, is refused and never reaches the upstream.
    for replica in 0..3 {
        let (status, _, body) = paid_get(&rig.url(replica, "/api/data"), &payment).await;
        assert_eq!(status, 402, "{body}");
        assert_eq!(body["error"], "payment_already_used", "{body}");
    }
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
    assert_eq!(rig.settles().await, 1);

    // A fresh payment is served by any replica.
    let fresh = pay_exact(&accepted(&rig.url(2, "/api/data")).await);
    let (status, settlement, _) = paid_get(&rig.url(2, "/api/data"), &fresh).await;
    assert_eq!(status, 200);
    assert!(settlement.is_some());
    assert_eq!(upstream_hits(&rig.upstream).await, 2);
}

/// A paid request while Redis does not answer: 503 within a bound, upstream untouched.
async fn assert_fails_closed(rig: &Replicas, replica: usize) {
    let hits = upstream_hits(&rig.upstream).await;
    let payment = pay_exact(&accepted(&rig.url(replica, "/api/data")).await);
    let started = Instant::now();
    let r = http()
        .get(rig.url(replica, "/api/data"))
        .header("PAYMENT-SIGNATURE", &payment)
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "replay_store_unavailable", "{body}");
    assert!(
        elapsed < Duration::from_secs(2),
        "answered in {elapsed:?}, past the bound of the 250ms timeout"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, hits, "no upstream hit");
}

async fn assert_free_and_challenges_work(rig: &Replicas, replica: usize) {
    let r = http()
        .get(rig.url(replica, "/free/ping"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "free routes are unaffected");
    let r = http()
        .get(rig.url(replica, "/api/data"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402, "challenges are unaffected");
}

/// Paid requests succeed again within a few seconds of Redis answering again.
async fn assert_heals(rig: &Replicas, replica: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let payment = pay_exact(&accepted(&rig.url(replica, "/api/data")).await);
        let (status, settlement, body) = paid_get(&rig.url(replica, "/api/data"), &payment).await;
        if status == 200 {
            assert!(settlement.is_some());
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "never healed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.wait_ready(replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_not_answering_fails_closed_and_heals_without_restart() {
    let mut rig = Replicas::start(3, "");
    for replica in 0..3 {
        rig.wait_ready(replica).await;
    }
    let payment = pay_exact(&accepted(&rig.url(0, "/api/data")).await);
    assert_eq!(paid_get(&rig.url(0, "/api/data"), &payment).await.0, 200);

    // Frozen: connections stay open, nothing answers; the timeout decides.
    rig.redis.pause();
    assert_fails_closed(&rig, 1).await;
    assert_free_and_challenges_work(&rig, 1).await;
    let (status, body) = rig.readyz(1).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["shared_store"]["reachable"], json!(false), "{body}");
    assert!(
        !body.to_string().contains("password"),
        "readiness names no credential"
    );
    rig.redis.resume();
    assert_heals(&rig, 1).await;

    // Gone: connections are refused; a restarted Redis is found again.
    rig.redis.stop();
    assert_fails_closed(&rig, 2).await;
    assert_free_and_challenges_work(&rig, 2).await;
    rig.redis.restart();
    assert_heals(&rig, 2).await;
    assert_heals(&rig, 0).await;

    let metrics = http()
        .get(rig.gateways[1].admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("x402_shared_store_unavailable_total{operation=\"replay_reserve\"}")),
        "{metrics}"
    );
}

/// `payment` (a base64 `PAYMENT-SIGNATURE`) with a `payment-identifier` extension.
fn with_identifier(payment: &str, id: &str) -> String {
    let mut payload = decode_b64_json(payment);
    payload["extensions"] = json!({"payment-identifier": {"info": {"id": id}}});
    encode_b64_json(&payload)
}

/// A paid GET: (status, PAYMENT-RESPONSE header as sent, body bytes).
async fn paid_raw(url: &str, payment: &str) -> (u16, Option<String>, Vec<u8>) {
    let r = http()
        .get(url)
        .header("PAYMENT-SIGNATURE", payment)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let settlement = r
        .headers()
        .get("payment-response")
        .map(|h| h.to_str().unwrap().to_string());
    (status, settlement, r.bytes().await.unwrap().to_vec())
}

/// A resend after the first delivery: the record is written as the first request ends, so a
/// resend racing that instant may still see it in flight (409) and retries.
async fn resend(url: &str, payment: &str) -> (u16, Option<String>, Vec<u8>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let answer = paid_raw(url, payment).await;
        let in_flight = answer.0 == 409
            && serde_json::from_slice::<Value>(&answer.2)
                .is_ok_and(|b| b["error"] == "payment_in_progress");
        if !in_flight || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resends of one identified payment: 409 while the first is in flight, then the stored
/// response from any replica, and no second charge or upstream call.
async fn assert_idempotent_resends(rig: &Replicas) {
    let url = rig.url(0, "/api/slow");
    let payment = with_identifier(
        &pay_exact(&accepted(&url).await),
        "pay_retry_0123456789abcdef",
    );
    let hits = upstream_hits(&rig.upstream).await;
    let settles = rig.settles().await;
    let first = {
        let url = url.clone();
        let payment = payment.clone();
        tokio::spawn(async move { paid_raw(&url, &payment).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    for replica in 0..rig.gateways.len() {
        let (status, _, body) = paid_raw(&rig.url(replica, "/api/slow"), &payment).await;
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"], "payment_in_progress", "{body}");
    }
    let (status, settlement, body) = first.await.unwrap();
    assert_eq!(status, 200);
    let settlement = settlement.expect("PAYMENT-RESPONSE on the first delivery");
    for replica in 0..rig.gateways.len() {
        let again = resend(&rig.url(replica, "/api/slow"), &payment).await;
        assert_eq!(again.0, 200, "replica {replica}");
        assert_eq!(
            again.1.as_deref(),
            Some(settlement.as_str()),
            "the same receipt"
        );
        assert_eq!(again.2, body, "the body as first sent");
    }
    assert_eq!(
        upstream_hits(&rig.upstream).await,
        hits + 1,
        "one upstream hit"
    );
    assert_eq!(rig.settles().await, settles + 1, "one settlement");

    // Another payment under the same identifier is refused, and charges nothing.
    let other = with_identifier(
        &pay_exact(&accepted(&url).await),
        "pay_retry_0123456789abcdef",
    );
    let (status, _, body) = paid_raw(&rig.url(1, "/api/slow"), &other).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "payment_identifier_mismatch", "{body}");
    assert_eq!(rig.settles().await, settles + 1);

    // A malformed identifier is an error, not silently ignored.
    let bad = with_identifier(&pay_exact(&accepted(&url).await), "short");
    let (status, _, body) = paid_raw(&url, &bad).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_resends_get_the_stored_response_from_any_replica() {
    let rig = Replicas::start(3, "");
    for replica in 0..3 {
        rig.wait_ready(replica).await;
    }
    assert_idempotent_resends(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotent_resends_work_in_memory_without_redis() {
    let rig = Replicas::sharing(1, "", false);
    assert_idempotent_resends(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_larger_than_the_limit_is_delivered_but_not_kept() {
    let rig = Replicas::start(2, "[idempotency]\nmax_body_bytes = 64\nttl = \"1m\"\n");
    let url = rig.url(0, "/api/data");
    let payment = with_identifier(
        &pay_exact(&accepted(&url).await),
        "pay_large_0123456789abcdef",
    );
    let (status, settlement, body) = paid_raw(&url, &payment).await;
    assert_eq!(status, 200);
    assert!(settlement.is_some());
    assert!(
        body.len() > 64,
        "the upstream's echo is larger than the limit"
    );
    let (status, _, body) = resend(&rig.url(1, "/api/data"), &payment).await;
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "response_not_kept", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("64 bytes"),
        "{body}"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, 1);
    assert_eq!(rig.settles().await, 1);
}

const LIMITS: &str = r#"
[[rate_limits]]
per = "ip"
requests = 4
window = "1h"
applies_to = "challenges"
routes = ["GET /api/data"]
[[rate_limits]]
per = "payer"
requests = 2
window = "1h"
applies_to = "paid"
"#;

/// Challenges per client address and paid requests per payer, counted over all replicas.
async fn assert_rate_limits(rig: &Replicas) {
    // Windows are aligned on the clock: stay clear of an hour's end.
    let into_hour = now() % 3600;
    if into_hour > 3590 {
        tokio::time::sleep(Duration::from_secs(3601 - into_hour)).await;
    }
    let accepted = accepted(&rig.url(0, "/api/data")).await;
    for replica in 1..4 {
        let r = http()
            .get(rig.url(replica, "/api/data"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 402, "challenge {replica} is within the limit");
    }
    let r = http().get(rig.url(4, "/api/data")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    let r = http().get(rig.url(0, "/api/slow")).send().await.unwrap();
    assert_eq!(
        r.status(),
        402,
        "a route the limit does not name is not limited"
    );

    for replica in 0..2 {
        let (status, _, body) =
            paid_get(&rig.url(replica, "/api/data"), &pay_exact(&accepted)).await;
        assert_eq!(status, 200, "{body}");
    }
    let settles = rig.settles().await;
    let (status, _, body) = paid_get(&rig.url(2, "/api/data"), &pay_exact(&accepted)).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(
        upstream_hits(&rig.upstream).await,
        2,
        "the third payment never reached the upstream"
    );
    assert_eq!(rig.settles().await, settles, "nor the facilitator's settle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_counted_across_replicas() {
    let rig = Replicas::start(3, LIMITS);
    for replica in 0..3 {
        rig.wait_ready(replica).await;
    }
    assert_rate_limits(&rig).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_are_counted_locally_without_redis() {
    let rig = Replicas::sharing(1, LIMITS, false);
    assert_rate_limits(&rig).await;
}

/// A restarted replica remembers the journal's live settled authorizations in batches of one
/// round trip each; a key another replica holds right now is left to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settled_authorizations_from_a_journal_are_remembered_in_bulk_and_held_keys_left_alone() {
    use std::sync::Arc;
    use x402_gateway::payment::{ReplayError, ReplayGuard, ReplayKey};
    use x402_gateway::store::{RedisReplayGuard, RedisStore};

    let redis = Redis::start();
    let settings = redis.settings();
    let running = RedisReplayGuard::new(Arc::new(RedisStore::connect(&settings).unwrap()));
    let restarted = RedisReplayGuard::new(Arc::new(RedisStore::connect(&settings).unwrap()));
    let key =
        |n: usize| ReplayKey::new("eip155:84532", "0xasset", "0xfrom", &format!("0x{n:064x}"));
    let (now, valid_before) = (now(), now() + 120);
    // The running replica is using one of them at this moment.
    running.reserve(&key(7), valid_before, now).await.unwrap();

    // More than one batch.
    let recorded: Vec<(ReplayKey, u64)> = (0..1_203).map(|n| (key(n), valid_before)).collect();
    let remembered = restarted.remember_settled(&recorded, now).await;
    assert_eq!(remembered, 1_202, "every key but the one held elsewhere");
    for n in [0, 499, 500, 1_000, 1_202] {
        assert_eq!(
            running.reserve(&key(n), valid_before, now).await,
            Err(ReplayError::AlreadySettled),
            "key {n}"
        );
    }
    assert_eq!(
        restarted.reserve(&key(7), valid_before, now).await,
        Err(ReplayError::InFlight),
        "the running replica's reservation is untouched"
    );
    running.release(&key(7)).await;
    restarted.reserve(&key(7), valid_before, now).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_is_released_by_its_owner_only_and_kept_once_settled_or_unknown() {
    use std::sync::Arc;
    use x402_gateway::payment::{ReplayError, ReplayGuard, ReplayKey};
    use x402_gateway::store::{RedisReplayGuard, RedisStore};

    let redis = Redis::start();
    let settings = redis.settings();
    // Two replicas: each its own client, one Redis.
    let first = RedisReplayGuard::new(Arc::new(RedisStore::connect(&settings).unwrap()));
    let second = RedisReplayGuard::new(Arc::new(RedisStore::connect(&settings).unwrap()));
    let key = |n: &str| ReplayKey::new("eip155:196", "0xasset", "0xfrom", n);
    let (now, valid_before) = (now(), now() + 120);

    first.reserve(&key("a"), valid_before, now).await.unwrap();
    assert_eq!(
        second.reserve(&key("a"), valid_before, now).await,
        Err(ReplayError::InFlight)
    );
    second.release(&key("a")).await;
    assert_eq!(
        second.reserve(&key("a"), valid_before, now).await,
        Err(ReplayError::InFlight),
        "only the owner releases"
    );
    first.release(&key("a")).await;
    second.reserve(&key("a"), valid_before, now).await.unwrap();

    second.mark_settled(&key("a")).await;
    first.reserve(&key("b"), valid_before, now).await.unwrap();
    first.keep_unknown(&key("b")).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    // The final state is written off the response path; until then the reservation refuses.
    loop {
        let a = first.reserve(&key("a"), valid_before, now).await;
        let b = second.reserve(&key("b"), valid_before, now).await;
        // A tombstone stays apart from a settlement.
        if a == Err(ReplayError::AlreadySettled) && b == Err(ReplayError::OutcomeUnknown) {
            break;
        }
        assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
        assert!(Instant::now() < deadline, "{a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    second.release(&key("a")).await;
    first.release(&key("b")).await;
    assert_eq!(
        first.reserve(&key("a"), valid_before, now).await,
        Err(ReplayError::AlreadySettled),
        "a settled authorization is never released"
    );
    assert_eq!(
        second.reserve(&key("b"), valid_before, now).await,
        Err(ReplayError::OutcomeUnknown),
        "nor a tombstone"
    );

    // Kept until validBefore plus a margin, not forever.
    let ttl = Command::new("redis-cli")
        .args([
            "-p",
            &redis.port.to_string(),
            "--scan",
            "--pattern",
            "x402:replay:*",
        ])
        .output()
        .unwrap();
    let keys = String::from_utf8(ttl.stdout).unwrap();
    let one = keys
        .lines()
        .next()
        .expect("replay keys under the default prefix");
    let pttl = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "PTTL", one])
        .output()
        .unwrap();
    let pttl: u64 = String::from_utf8(pttl.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!((120_000..=181_000).contains(&pttl), "{pttl} ms");

    redis.pause();
    let started = Instant::now();
    assert_eq!(
        first.reserve(&key("c"), valid_before, now).await,
        Err(ReplayError::Unavailable)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    redis.resume();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_authenticates_and_is_never_printed() {
    const PASSWORD: &str = "redis-pass-5c1e7a90";
    let redis = Redis::start_with(Some(PASSWORD));
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    let port = free_port();
    let config = vendor_config(
        port,
        upstream.port,
        &okx_facilitator(okx.port, ""),
        &format!(
            "{ROUTES}\n[redis]\nurl = \"redis://:{PASSWORD}@127.0.0.1:{}\"\n",
            redis.port
        ),
    );
    let (ok, stdout, stderr) = check(&config);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("redis://:***@127.0.0.1"), "{stdout}");
    let gateway = vendor_gateway(&config).start();
    let url = gateway.url("/api/data");
    let (status, settlement, body) = paid_get(&url, &pay_exact(&accepted(&url).await)).await;
    assert_eq!(status, 200, "authenticated: {body}");
    assert!(settlement.is_some());
    let r = http()
        .get(format!("http://127.0.0.1:{}/readyz", admin_port(&config)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let readyz = r.text().await.unwrap();
    let everything = format!("{stdout}{stderr}{readyz}{}", gateway.log());
    assert!(everything.contains("127.0.0.1"), "the log names the Redis");
    assert!(
        !everything.contains(PASSWORD),
        "the password leaked: {everything}"
    );
}

/// `redis-cli MONITOR` on the test's Redis: every command as the server received it.
struct Monitor {
    child: Child,
    out: std::path::PathBuf,
}

impl Monitor {
    fn start(redis: &Redis) -> Self {
        let out = std::env::temp_dir().join(format!("x402-monitor-{}.log", free_port()));
        let file = std::fs::File::create(&out).unwrap();
        let mut child = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "MONITOR"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-cli is installed");
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "MONITOR did not start");
            let _ = Command::new("redis-cli")
                .args(["-p", &redis.port.to_string(), "ECHO", "monitor-started"])
                .output();
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(Some(_)) = child.try_wait() {
            panic!("MONITOR ended early");
        }
        Self { child, out }
    }

    /// The commands clients sent (one round trip each), without those scripts ran inside, the
    /// health probe's PINGs and this monitor's own ECHOs.
    fn round_trips(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap();
        text.lines()
            .filter(|line| line.contains(" ["))
            .filter(|line| !line.contains(" lua] "))
            .filter(|line| !line.contains("\"PING\"") && !line.contains("\"ECHO\""))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.out);
    }
}

const LIMITED: &str = r#"
[[rate_limits]]
per = "payer"
requests = 100
window = "1h"
applies_to = "paid"
[[rate_limits]]
per = "ip"
requests = 100
window = "1h"
applies_to = "paid"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_request_costs_one_redis_round_trip_before_the_upstream_and_one_after() {
    let rig = Replicas::start(1, LIMITED);
    rig.wait_ready(0).await;
    let url = rig.url(0, "/api/data");
    // Scripts are loaded once per server (NOSCRIPT, SCRIPT LOAD): not part of a request's cost.
    let (status, _, _) = paid_raw(
        &url,
        &with_identifier(
            &pay_exact(&accepted(&url).await),
            "pay_warm_0123456789abcdef",
        ),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let payment = with_identifier(
        &pay_exact(&accepted(&url).await),
        "pay_count_0123456789abcdef",
    );
    let hits = upstream_hits(&rig.upstream).await;
    let monitor = Monitor::start(&rig.redis);
    let (status, settlement, _) = paid_raw(&url, &payment).await;
    // The settle-time writes go out as the response ends; let them land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let trips = monitor.round_trips();
    assert_eq!(status, 200);
    assert!(settlement.is_some());
    assert_eq!(upstream_hits(&rig.upstream).await, hits + 1);

    let claims: Vec<_> = trips
        .iter()
        .filter(|t| t.contains(":rate:") || t.contains(":idem:") || t.contains(":replay:"))
        .collect();
    assert!(
        trips.iter().all(|t| t.contains("\"EVALSHA\"")),
        "only scripts, each one round trip: {trips:#?}"
    );
    let admission: Vec<_> = claims
        .iter()
        .filter(|t| t.contains(":rate:") && t.contains(":idem:") && t.contains(":replay:"))
        .collect();
    assert_eq!(
        admission.len(),
        1,
        "rate limits, identifier and reservation in one round trip: {trips:#?}"
    );
    assert!(
        !trips
            .iter()
            .any(|t| t.contains(":rate:") && !t.contains(":replay:")),
        "no separate rate-limit round trip: {trips:#?}"
    );
    // After the response: the settled reservation and the kept response, together.
    assert_eq!(
        trips.len(),
        2,
        "one before the upstream, one after: {trips:#?}"
    );
    assert!(
        trips[1].contains(":replay:") && trips[1].contains(":idem:"),
        "{trips:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unknown_outcome_leaves_a_tombstone_every_replica_refuses() {
    // Each replica's journal next to its configuration.
    let rig = Replicas::start(3, "[journal]\npath = \"journal.jsonl\"\n");
    for replica in 0..3 {
        rig.wait_ready(replica).await;
    }
    set_mode(&rig.okx, json!({"settle": "http500"})).await;
    let payment = pay_exact(&accepted(&rig.url(0, "/api/data")).await);
    let (status, settlement, body) = paid_get(&rig.url(0, "/api/data"), &payment).await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "settlement_unconfirmed", "{body}");
    assert!(settlement.is_some(), "the unconfirmed receipt goes with it");
    assert_eq!(rig.settles().await, 1);
    set_mode(&rig.okx, json!({"settle": "normal"})).await;
    let journal = rig.gateways[0]
        .config_path()
        .with_file_name("journal.jsonl");
    let last: Value = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .expect("a journal line");
    assert_eq!(last["state"], "pending", "{last}");

    // The tombstone is written off the response path; until then the reservation refuses.
    for replica in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let (status, _, body) = paid_get(&rig.url(replica, "/api/data"), &payment).await;
            if status == 402 {
                assert_eq!(body["error"], "payment_already_used", "{body}");
                assert!(
                    body["message"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("not confirmed"),
                    "{body}"
                );
                break;
            }
            assert_eq!(status, 409, "{body}");
            assert!(Instant::now() < deadline, "{body}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        rig.settles().await,
        1,
        "nothing released, nothing settled twice"
    );
    assert_eq!(upstream_hits(&rig.upstream).await, 1);

    // Kept apart from `settled`, until validBefore plus the margin.
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &rig.redis.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let keys = cli(&["--scan", "--pattern", "test*:replay:*"]);
    let key = keys.lines().next().expect("one replay key");
    assert_eq!(cli(&["GET", key]), "unknown");
    let pttl: u64 = cli(&["PTTL", key]).parse().unwrap();
    assert!((60_000..=181_000).contains(&pttl), "{pttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_redis_honour_one_access_grant_and_one_sign_in_nonce() {
    use std::sync::Arc;
    use x402_gateway::store::{RedisSignIn, RedisStore, SignInStore};

    let redis = Redis::start();
    let settings = redis.settings();
    // Two replicas: each its own client, one Redis.
    let first = RedisSignIn::new(Arc::new(RedisStore::connect(&settings).unwrap()));
    let second = RedisSignIn::new(Arc::new(RedisStore::connect(&settings).unwrap()));
    let now = x402_gateway::time::unix_now_ms();
    let resource = "GET /report /report";
    let payer = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    assert!(!second.granted(resource, payer, now).await.unwrap());
    first.grant(resource, payer, now + 60_000).await.unwrap();
    assert!(
        second
            .granted(resource, &payer.to_lowercase(), now)
            .await
            .unwrap(),
        "a grant written by one replica is honoured by the other, whatever the address case"
    );
    assert!(!second
        .granted("GET /other /other", payer, now)
        .await
        .unwrap());
    assert!(!second
        .granted(resource, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", now)
        .await
        .unwrap());
    // a shorter grant written later does not cut the longer one
    second.grant(resource, payer, now + 1).await.unwrap();
    assert!(first.granted(resource, payer, now).await.unwrap());

    assert!(first.use_nonce("nonce-a", now + 60_000, now).await.unwrap());
    assert!(
        !second
            .use_nonce("nonce-a", now + 60_000, now)
            .await
            .unwrap(),
        "a nonce used on one replica is refused on the other"
    );
    assert!(second
        .use_nonce("nonce-b", now + 60_000, now)
        .await
        .unwrap());
}

#[test]
fn each_runtime_gets_its_own_redis_connection_and_an_ended_one_gives_it_up() {
    use std::sync::Arc;
    use x402_gateway::payment::{ReplayError, ReplayGuard, ReplayKey};
    use x402_gateway::store::{RedisReplayGuard, RedisStore, StoreHealth};

    let redis = Redis::start();
    // Made outside any runtime, as the gateway makes it at start-up.
    let store = Arc::new(RedisStore::connect(&redis.settings()).unwrap());
    let guard = RedisReplayGuard::new(store.clone());
    let key = ReplayKey::new("eip155:196", "0xasset", "0xfrom", "runtimes");
    let valid_before = now() + 120;
    let runtime = |threads: usize| {
        if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        .enable_all()
        .build()
        .unwrap()
    };
    let bounded = Duration::from_secs(5);

    // A runtime that ends right after its calls, like the one that replays the journal.
    let first = runtime(1);
    first.block_on(async {
        guard.reserve(&key, valid_before, now()).await.unwrap();
        guard.mark_settled(&key).await;
        tokio::time::timeout(bounded, store.detached_done())
            .await
            .expect("the detached write ends within its timeout");
    });
    assert_eq!(store.runtimes_connected(), 1);
    assert!(store.reachable());
    drop(first);
    assert_eq!(
        store.runtimes_connected(),
        0,
        "an ended runtime gives its connection up"
    );

    // What the ended runtime wrote landed, and another runtime reads it on a connection of its own.
    let second = runtime(2);
    assert_eq!(
        second.block_on(guard.reserve(&key, valid_before, now())),
        Err(ReplayError::AlreadySettled)
    );
    let third = runtime(1);
    assert!(third.block_on(store.ping()));
    assert_eq!(store.runtimes_connected(), 2);

    // Redis going away and coming back heals each runtime's connection.
    redis.pause();
    assert!(!second.block_on(store.ping()));
    assert!(!store.reachable());
    redis.resume();
    let deadline = Instant::now() + bounded;
    while !(second.block_on(store.ping()) && third.block_on(store.ping())) {
        assert!(Instant::now() < deadline, "redis did not answer again");
    }
    assert!(store.reachable());
    assert_eq!(store.runtimes_connected(), 2);
}
