//! The settlement journal in a real PostgreSQL shared by several gateway processes: each payment
//! recorded once whichever replica took it, replicas starting together migrating once, a pending
//! settlement of a replica killed with `kill -9` finished by another, and a database stopped and
//! restarted mid-run losing no receipt and writing none twice.

mod common;
mod vendor;

use common::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vendor::*;

/// The password in the journal URL: the server trusts loopback, so any value connects, and the
/// logs must never show it.
const DB_PASSWORD: &str = "journal-pw-9c4e1d";

/// The database a test creates on the machine's PostgreSQL and drops when it ends.
struct TestDatabase {
    admin_url: String,
    name: String,
    port: u16,
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL: {e}"));
    tokio::spawn(connection);
    client
}

impl TestDatabase {
    async fn create() -> Self {
        Self::create_on(5432).await
    }

    async fn create_on(port: u16) -> Self {
        let admin_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let name = format!(
            "x402_test_{}_{}",
            std::process::id(),
            &x402_gateway::ops::journal::unix_now().to_string()[6..]
        ) + &format!("{:04x}", rand_u16());
        connect(&admin_url)
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        Self {
            admin_url,
            name,
            port,
        }
    }

    /// The URL a gateway configuration names, with the password from the environment.
    fn config_url(&self) -> String {
        format!(
            "postgres://postgres:${{JOURNAL_DB_PASSWORD}}@127.0.0.1:{}/{}",
            self.port, self.name
        )
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, self.name)
    }

    async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

fn rand_u16() -> u16 {
    let n = x402_gateway::buyer::random_nonce();
    u16::from_be_bytes([n[0], n[1]])
}

/// A gateway process on the shared journal, its log kept in a file; killed on drop.
struct Replica {
    gateway: TestGateway,
}

impl Replica {
    /// Starts a replica without waiting for it (so that several start at once).
    fn spawn(upstream: &Proc, okx: &Proc, db: &TestDatabase, reconcile: &str) -> Self {
        let port = free_port();
        let gateway = vendor_config(
            port,
            upstream.port,
            &okx_facilitator(okx.port, ""),
            OKX_ROUTES,
        );
        Self::spawn_with(&gateway, port, db, reconcile)
    }

    /// Starts `gateway` (listening on `port`) with the journal in `db`.
    fn spawn_with(gateway: &str, port: u16, db: &TestDatabase, reconcile: &str) -> Self {
        let text = format!(
            "{gateway}[journal]\nurl = \"{}\"\npath = \"spool.jsonl\"\nreconcile_interval = \"{reconcile}\"\n",
            db.config_url()
        );
        let gateway = TestGateway::builder(&text)
            .port(port)
            .envs(credentials_env())
            .env("JOURNAL_DB_PASSWORD", DB_PASSWORD)
            .rust_log("info,pingora_core=warn,pingora_proxy=warn")
            .spawn();
        Self { gateway }
    }

    fn start(upstream: &Proc, okx: &Proc, db: &TestDatabase, reconcile: &str) -> Self {
        let mut replica = Self::spawn(upstream, okx, db, reconcile);
        replica.wait_listening();
        replica
    }

    fn wait_listening(&mut self) {
        self.gateway.wait_listening();
    }

    /// The replica's configuration file, which `receipts` reads too.
    fn config(&self) -> &Path {
        self.gateway.config_path()
    }

    fn log(&self) -> String {
        self.gateway.log()
    }

    fn url(&self, path: &str) -> String {
        self.gateway.url(path)
    }

    async fn pay(&self, path: &str) -> (u16, Option<Value>, Value, String) {
        let url = self.url(path);
        let payment = pay_exact(&accepted(&url).await);
        let (status, settlement, body) = paid_get(&url, &payment).await;
        (status, settlement, body, payment)
    }

    async fn metrics(&self) -> String {
        http()
            .get(self.gateway.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    fn kill_9(&mut self) {
        self.gateway.kill();
    }
}

/// `x402-gateway receipts` with the replica's configuration and `args`.
fn receipts_output(config: &Path, args: &[&str]) -> String {
    let out = Command::new(gateway_bin())
        .arg("receipts")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("JOURNAL_DB_PASSWORD", DB_PASSWORD)
        .envs(credentials_env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(DB_PASSWORD));
    String::from_utf8(out.stdout).unwrap()
}

fn receipts(config: &Path, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str::<Value>(&receipts_output(config, &all))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Every journal event recorded more than once (it must be none).
async fn duplicate_events(db: &TestDatabase) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM (SELECT id, state, time FROM x402_journal_events \
             GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn replicas_share_one_ledger_migrated_once_and_list_each_payment_once() {
    let db = TestDatabase::create().await;
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    // Three replicas start at the same moment on an empty database.
    let mut replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::spawn(&upstream, &okx, &db, "300ms"))
        .collect();
    for r in &mut replicas {
        r.wait_listening();
    }
    let migrated = replicas
        .iter()
        .filter(|r| r.log().contains("journal database migrated"))
        .count();
    assert_eq!(migrated, 1, "exactly one replica applies the migration");
    let versions: Vec<i32> = db
        .client()
        .await
        .query(
            "SELECT version FROM x402_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2], "each version applied once");
    let up_to_date = replicas
        .iter()
        .filter(|r| r.log().contains("journal database schema is up to date"))
        .count();
    assert_eq!(
        up_to_date, 2,
        "the others waited for it and found nothing to do"
    );

    // Two payments through each replica.
    let mut transactions = Vec::new();
    let mut payments = Vec::new();
    for r in &replicas {
        for _ in 0..2 {
            let (status, settlement, body, payment) = r.pay("/api/sync").await;
            assert_eq!(status, 200, "{body}");
            transactions.push(
                settlement.unwrap()["transaction"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
            payments.push(payment);
        }
    }
    assert_eq!(upstream_hits(&upstream).await, 6);

    // The same authorization on another replica (whose own replay memory never saw it) is
    // refused before the upstream or a second settlement (OKX knows the nonce is used; a
    // facilitator that does not is stopped by the database, see the test below).
    let settles = control(&okx, "/__calls").await["settle"].as_u64().unwrap();
    let (status, _, body) = paid_get(&replicas[1].url("/api/sync"), &payments[0]).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(
        upstream_hits(&upstream).await,
        6,
        "the copy never reached the upstream"
    );
    assert_eq!(
        control(&okx, "/__calls").await["settle"].as_u64().unwrap(),
        settles,
        "never settled twice"
    );

    // Any replica's configuration lists every replica's payments, each once.
    let rows = receipts(replicas[2].config(), &[]);
    assert_eq!(rows.len(), 6, "{rows:?}");
    let mut seen: Vec<&str> = rows
        .iter()
        .map(|r| r["transaction"].as_str().unwrap())
        .collect();
    seen.sort_unstable();
    let mut expected: Vec<&str> = transactions.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(seen, expected);
    assert!(rows.iter().all(|r| r["state"] == "settled"));
    assert!(rows.iter().all(|r| r["amount"] == "10000"));
    assert!(rows.iter().all(|r| r.get("key").is_none()));

    // Filters: route, payer, state, time; csv has a header and one line per payment.
    let payer = rows[0]["payer"].as_str().unwrap().to_lowercase();
    assert_eq!(
        receipts(replicas[0].config(), &["--route", "GET /api/sync"]).len(),
        6
    );
    assert_eq!(
        receipts(replicas[0].config(), &["--route", "GET /api/data"]).len(),
        0
    );
    assert_eq!(
        receipts(replicas[0].config(), &["--payer", &payer]).len(),
        6
    );
    assert_eq!(receipts(replicas[0].config(), &["--payer", OTHER]).len(), 0);
    assert_eq!(
        receipts(replicas[0].config(), &["--state", "settled"]).len(),
        6
    );
    assert_eq!(
        receipts(replicas[0].config(), &["--state", "pending"]).len(),
        0
    );
    assert_eq!(receipts(replicas[0].config(), &["--since", "1h"]).len(), 6);
    assert_eq!(
        receipts(replicas[0].config(), &["--since", "2999-01-01"]).len(),
        0
    );
    let csv = receipts_output(replicas[1].config(), &["--state", "settled"]);
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(csv.starts_with("time,id,state,route,payer,amount"));

    // Each replica's metrics show the revenue of all of them.
    let series = format!(
        "x402_ledger_revenue_atomic{{asset=\"{USDT0}\",network=\"eip155:196\",route=\"GET /api/sync\"}}"
    );
    for r in &replicas {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let m = r.metrics().await;
            if sample(&m, &series) == 60_000.0 {
                break;
            }
            assert!(Instant::now() < deadline, "no ledger revenue: {m}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for r in &replicas {
        assert!(!r.log().contains(DB_PASSWORD), "the password was logged");
    }
    assert_eq!(duplicate_events(&db).await, 0);
}

/// The open payments no transaction has claimed, as a reconciliation pass would find them.
async fn unclaimed(db: &TestDatabase) -> usize {
    let mut client = db.client().await;
    let tx = client.transaction().await.unwrap();
    let rows = tx
        .query(
            "SELECT id FROM x402_payments WHERE state = 'pending' FOR UPDATE SKIP LOCKED",
            &[],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    rows.len()
}

#[tokio::test]
async fn a_pending_settlement_of_a_replica_killed_with_kill_9_is_finished_by_another() {
    let db = TestDatabase::create().await;
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    // The status API hangs: the first replica's pass claims the payment and waits on it.
    set_mode(&okx, json!({"status": "hang"})).await;
    let mut first = Replica::start(&upstream, &okx, &db, "200ms");
    let (status, settlement, body, _) = first.pay("/api/data").await;
    assert_eq!(status, 200, "{body}");
    let settlement = settlement.unwrap();
    assert_eq!(settlement["status"], "pending");
    let tx = settlement["transaction"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while control(&okx, "/__calls").await["status"].as_u64().unwrap() < 1 {
        assert!(Instant::now() < deadline, "never claimed: {}", first.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(unclaimed(&db).await, 0, "the first replica holds the claim");
    let rows = receipts(first.config(), &["--state", "pending"]);
    assert_eq!(rows.len(), 1, "{rows:?}");

    first.kill_9();
    // The server ends the dead connection's transaction when it notices the socket closed, which
    // on a loaded machine takes a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while unclaimed(&db).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the claim did not die with the process"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_mode(&okx, json!({"status": "normal"})).await;
    let before = control(&okx, "/__calls").await["status"].as_u64().unwrap();
    let second = Replica::start(&upstream, &okx, &db, "200ms");
    // The emulator answers pending once, then confirmed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = receipts(second.config(), &[]);
        assert_eq!(rows.len(), 1, "{rows:?}");
        if rows[0]["state"] == "settled" {
            assert_eq!(rows[0]["transaction"], tx.as_str());
            break;
        }
        assert_eq!(rows[0]["state"], "pending");
        assert!(
            Instant::now() < deadline,
            "never reconciled: {}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(control(&okx, "/__calls").await["status"].as_u64().unwrap() >= before + 2);
    assert_eq!(control(&okx, "/__last/status").await["txHash"], tx.as_str());
    assert_eq!(duplicate_events(&db).await, 0);
}

/// A PostgreSQL server of the test's own on a free port, in a temporary directory, stopped and
/// removed on drop. The server refuses to run as root, so it runs as the `postgres` user then.
struct OwnPostgres {
    dir: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join(name).exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("initdb and pg_ctl").join(name)
}

fn as_server_user(program: &Path) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl OwnPostgres {
    fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("x402-pg-{}-{:04x}", std::process::id(), rand_u16()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let port = free_port();
        let data = dir.join("data");
        let ok = as_server_user(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "initdb failed");
        let pg = Self { dir, port };
        pg.pg_ctl_start();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        as_server_user(&pg_bin("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        assert!(
            self.pg_ctl(&["-w", "-o", &options, "-l", log.to_str().unwrap(), "start"]),
            "pg_ctl start failed: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    fn stop(&self) {
        assert!(
            self.pg_ctl(&["-w", "-m", "fast", "stop"]),
            "pg_ctl stop failed"
        );
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn postgres_stopped_and_restarted_mid_run_loses_no_receipt_and_duplicates_none() {
    let pg = OwnPostgres::start();
    let db = TestDatabase::create_on(pg.port).await;
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let okx = okx_emulator(&[]);
    let replica = Replica::start(&upstream, &okx, &db, "200ms");

    let (status, _, body, _) = replica.pay("/api/sync").await;
    assert_eq!(status, 200, "{body}");

    // The facilitator takes about two seconds to confirm the next settlement; the database goes
    // away after the payment was verified and recorded, before its settlement is.
    set_mode(&okx, json!({"settle": "timeout-success"})).await;
    let url = replica.url("/api/sync");
    let payment = pay_exact(&accepted(&url).await);
    let in_flight = tokio::spawn(async move { paid_get(&url, &payment).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while control(&okx, "/__calls").await["settle"].as_u64().unwrap() < 2 {
        assert!(Instant::now() < deadline, "the settlement never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pg.stop();
    let (status, settlement, body) = in_flight.await.unwrap();
    assert_eq!(
        status, 200,
        "the money moved: the content is delivered ({body})"
    );
    let spooled_tx = settlement.unwrap()["transaction"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        replica.log().contains("record spooled"),
        "{}",
        replica.log()
    );
    set_mode(&okx, json!({"settle": "normal"})).await;

    // While the database is down a new payment cannot be recorded: refused, nothing served.
    let hits = upstream_hits(&upstream).await;
    let (status, _, body, _) = replica.pay("/api/sync").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "journal_unavailable");
    assert_eq!(upstream_hits(&upstream).await, hits);

    pg.pg_ctl_start();
    let (status, _, body, _) = replica.pay("/api/sync").await;
    assert_eq!(status, 200, "{body}");

    // The spooled settlement reaches the database; nothing is there twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = receipts(replica.config(), &[]);
        let settled: Vec<&Value> = rows.iter().filter(|r| r["state"] == "settled").collect();
        if settled.len() == 3 {
            assert_eq!(
                rows.len(),
                3,
                "the refused payment was never recorded: {rows:?}"
            );
            assert!(settled
                .iter()
                .any(|r| r["transaction"] == spooled_tx.as_str()));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spool never drained: {rows:?}\n{}",
            replica.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(duplicate_events(&db).await, 0);
    let spool = replica.config().with_file_name("spool.jsonl");
    assert_eq!(
        std::fs::read_to_string(&spool).unwrap(),
        "",
        "the spool is empty once drained"
    );
}

#[tokio::test]
async fn unknown_and_pending_standard_settlements_are_resent_identically_and_closed() {
    let db = TestDatabase::create().await;
    let upstream = node("upstream.mjs", &["--port", "0"]);
    let facilitator = node("facilitator.mjs", &["--port", "0"]);
    let port = free_port();
    let gateway = config(port, upstream.port, facilitator.port, "", "");
    let mode = |m: Value| {
        let url = format!("http://127.0.0.1:{}/__mode", facilitator.port);
        async move { post_json(url, m).await }
    };
    let mut replica = Replica::spawn_with(&gateway, port, &db, "300ms");
    replica.wait_listening();
    let other_port = free_port();
    let other_config = config(other_port, upstream.port, facilitator.port, "", "");
    let mut other = Replica::spawn_with(&other_config, other_port, &db, "300ms");
    other.wait_listening();

    // The facilitator takes the settlement and never answers: its outcome is unknown.
    mode(json!({"settle": "hang"})).await;
    let url = replica.url("/paid");
    let payment = pay_exact(&accepted(&url).await);
    let copy = payment.clone();
    let in_flight = tokio::spawn(async move { paid_get(&url, &copy).await });
    let calls = format!("http://127.0.0.1:{}/__calls", facilitator.port);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(calls.clone()).await["settle"].as_u64().unwrap() < 1 {
        assert!(Instant::now() < deadline, "the settlement never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A copy on the other replica while the first is settling: the database says in flight.
    let (status, _, body) = paid_get(&other.url("/paid"), &payment).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "payment_in_progress");
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(
        upstream_hits(&upstream).await,
        1,
        "the copy never reached the upstream"
    );
    // And once its outcome is pending: already used.
    let (status, _, body) = paid_get(&other.url("/paid"), &payment).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "payment_already_used");
    // The other replica now refuses it itself: a further copy costs no facilitator call.
    let verifies = get_json(calls.clone()).await["verify"].as_u64().unwrap();
    let (status, _, body) = paid_get(&other.url("/paid"), &payment).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["error"], "payment_already_used");
    assert_eq!(
        get_json(calls.clone()).await["verify"].as_u64().unwrap(),
        verifies,
        "a copy the replica knows is spent never reaches the facilitator"
    );
    // (Reconciliation may already be sending the same request again: that is the only other
    // settle call there can be.)

    let first = get_json(format!(
        "http://127.0.0.1:{}/__last/settle",
        facilitator.port
    ))
    .await;
    let rows = receipts(replica.config(), &["--state", "pending"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason"], "facilitator_timeout");
    let text = receipts_output(replica.config(), &["--format", "json"]);
    assert!(
        !text.contains("signature"),
        "receipts never show the authorization: {text}"
    );

    // The facilitator is back; the next pass sends the identical request and records its answer.
    mode(json!({"settle": "normal"})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = receipts(replica.config(), &[]);
        if rows[0]["state"] == "settled" {
            assert!(rows[0]["transaction"].as_str().unwrap().starts_with("0x"));
            break;
        }
        assert!(Instant::now() < deadline, "never resent: {}", replica.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = get_json(format!(
        "http://127.0.0.1:{}/__last/settle",
        facilitator.port
    ))
    .await;
    assert_eq!(again, first, "the resend is the identical request");
    let kept: String = db
        .client()
        .await
        .query_one("SELECT settle_request FROM x402_payments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        kept, "",
        "the signed request is dropped once the payment is closed"
    );
    assert!(get_json(calls.clone()).await["settle"].as_u64().unwrap() >= 2);

    // A facilitator whose receipt wait timed out answers HTTP 500 `settlement_pending`: not a
    // refusal (the money may move), so the payment is pending and the same request goes again.
    mode(json!({"settle": "pending"})).await;
    let (status, _, body, _) = other.pay("/paid").await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "settlement_unconfirmed");
    let rows = receipts(other.config(), &["--state", "pending"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["reason"], "settlement_unconfirmed");
    let pending_id = rows[0]["id"].clone();
    let first = get_json(format!(
        "http://127.0.0.1:{}/__last/settle",
        facilitator.port
    ))
    .await;
    mode(json!({"settle": "normal"})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = receipts(other.config(), &["--state", "settled"]);
        if rows.iter().any(|r| r["id"] == pending_id) {
            break;
        }
        assert!(Instant::now() < deadline, "never resent: {}", other.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = get_json(format!(
        "http://127.0.0.1:{}/__last/settle",
        facilitator.port
    ))
    .await;
    assert_eq!(again, first, "the resend is the identical request");
    // Sent again on each pass until the facilitator gives a final answer.
    assert!(get_json(calls).await["settle"].as_u64().unwrap() >= 4);
    assert_eq!(receipts(other.config(), &[]).len(), 2);
    replica.kill_9();
    other.kill_9();
}

fn entry(id: &str, state: x402_gateway::ops::PaymentState) -> x402_gateway::ops::JournalEntry {
    x402_gateway::ops::JournalEntry {
        time: x402_gateway::ops::journal::rfc3339_now(),
        id: id.into(),
        state,
        route: "GET /paid".into(),
        payer: "0xabc".into(),
        amount: "10000".into(),
        asset: "0xasset".into(),
        network: "eip155:84532".into(),
        pay_to: PAY_TO.into(),
        transaction: String::new(),
        facilitator: "test".into(),
        reason: String::new(),
        key: format!("eip155:84532|0xasset|0xabc|{id}"),
        valid_before: x402_gateway::ops::journal::unix_now() + 600,
        settle_request: String::new(),
    }
}

#[test]
fn records_are_kept_once_never_move_a_payment_back_and_one_authorization_settles_once() {
    use x402_gateway::ops::{Journal, JournalError, PaymentState as S, PgJournal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let spool = write_config("").with_file_name("spool.jsonl");
    let journal = PgJournal::open(&db.url(), &spool).unwrap();
    let append = |e: &x402_gateway::ops::JournalEntry| runtime.block_on(journal.append(e.clone()));
    let state_of = |id: &str| -> String {
        runtime.block_on(async {
            db.client()
                .await
                .query_one("SELECT state FROM x402_payments WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get(0)
        })
    };

    let verified = entry("a", S::Verified);
    append(&verified).unwrap();
    assert!(matches!(
        append(&entry("a", S::Verified)),
        Err(JournalError::AlreadyRecorded { state: S::Verified })
    ));
    let pending = verified.next(S::Pending);
    std::thread::sleep(Duration::from_millis(2));
    let mut settled = verified.next(S::Settled);
    settled.transaction = "0x01".into();
    append(&settled).unwrap();
    append(&settled).unwrap(); // a spooled copy drained late
    append(&pending).unwrap(); // an older record arriving after the final one
    assert_eq!(state_of("a"), "settled");
    assert!(matches!(
        append(&entry("a", S::Verified)),
        Err(JournalError::AlreadyRecorded { state: S::Settled })
    ));

    // Nothing charged: the same authorization may be tried again.
    let first = entry("b", S::Verified);
    append(&first).unwrap();
    append(&first.next(S::NotCharged)).unwrap();
    std::thread::sleep(Duration::from_millis(2));
    append(&entry("b", S::Verified)).unwrap();
    assert_eq!(state_of("b"), "verified");

    let events: i64 = runtime.block_on(async {
        db.client()
            .await
            .query_one("SELECT count(*) FROM x402_journal_events", &[])
            .await
            .unwrap()
            .get(0)
    });
    // a: verified, settled, pending (history keeps it; the row ignores it); b: three records.
    assert_eq!(events, 6);
    let query = x402_gateway::ops::receipts::ReceiptQuery::default();
    let rows = runtime
        .block_on(PgJournal::read_receipts(&db.url(), &query))
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].transaction, "0x01");
}

/// The database applies the payment core's order of states, and nothing else: for every
/// (recorded, next) pair, and a next record older than, as old as and newer than the recorded
/// one, the row ends in the state [`PaymentState::after`] gives, and a refused `verified` record
/// says where the payment stands.
#[test]
fn every_pair_of_states_is_stored_as_the_state_table_says() {
    use x402_gateway::ops::{Journal, JournalError, PaymentState as S, PgJournal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let spool = write_config("").with_file_name("spool.jsonl");
    let journal = PgJournal::open(&db.url(), &spool).unwrap();
    let client = runtime.block_on(db.client());
    let recorded_at = "2026-01-01T00:00:01.000Z";
    let times = [
        ("older", "2026-01-01T00:00:00.000Z"),
        ("same", recorded_at),
        ("newer", "2026-01-01T00:00:02.000Z"),
    ];
    let mut checked = 0;
    for current in std::iter::once(None).chain(S::ALL.map(Some)) {
        for next in S::ALL {
            for (order, time) in times {
                let id = format!(
                    "{}-{}-{order}",
                    current.map_or("none", |c| c.as_str()),
                    next.as_str()
                );
                if let Some(current) = current {
                    let mut first = entry(&id, current);
                    first.time = recorded_at.into();
                    runtime.block_on(journal.append(first)).unwrap();
                }
                let mut record = entry(&id, next);
                record.time = time.into();
                record.reason = "the record".into();
                let written = runtime.block_on(journal.append(record));
                let expected = S::after(current, next, order == "older");
                let stored: String = runtime
                    .block_on(
                        client.query_one("SELECT state FROM x402_payments WHERE id = $1", &[&id]),
                    )
                    .unwrap()
                    .get(0);
                let case = format!("{current:?} then {next:?} ({order}): {written:?}");
                assert_eq!(stored, expected.as_str(), "{case}");
                // The same record twice (same payment, state and time: a spooled copy) is
                // kept once and never refused.
                let same_record = order == "same" && current == Some(next);
                match (next, current) {
                    // A refused attempt is told where the authorization stands.
                    (S::Verified, Some(held)) if expected == held && !same_record => assert!(
                        matches!(written, Err(JournalError::AlreadyRecorded { state }) if state == held),
                        "{case}"
                    ),
                    _ => assert!(written.is_ok(), "{case}"),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 6 * 5 * 3);
    // Nothing was spooled: every record reached the database.
    assert_eq!(std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0), 0);
}

/// A settled payment whose streamed answer the upstream cut gets a second `settled` record with
/// the reason: the row takes it, so `receipts --refund-candidates` lists the payment from the
/// database as it does from a file.
#[test]
fn a_settled_payment_cut_afterwards_is_a_refund_candidate_in_the_database() {
    use x402_gateway::ops::{Journal, PaymentState as S, PgJournal};
    use x402_gateway::payment::{BODY_CUT, BODY_INCOMPLETE};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let spool = write_config("").with_file_name("spool.jsonl");
    let journal = PgJournal::open(&db.url(), &spool).unwrap();
    let append = |e: &x402_gateway::ops::JournalEntry| runtime.block_on(journal.append(e.clone()));

    let cut = entry("cut", S::Verified);
    append(&cut).unwrap();
    let mut settled = cut.next(S::Settled);
    settled.transaction = "0x01".into();
    append(&settled).unwrap();
    let mut cut_line = settled.next(S::Settled);
    cut_line.reason = BODY_CUT.into();
    append(&cut_line).unwrap();
    // An older copy of the first settled record (a spool drained late) does not undo it.
    append(&settled).unwrap();

    let whole = entry("whole", S::Verified);
    append(&whole).unwrap();
    append(&whole.next(S::Settled)).unwrap();
    let incomplete = entry("incomplete", S::Verified);
    append(&incomplete).unwrap();
    let mut not_charged = incomplete.next(S::NotCharged);
    not_charged.reason = BODY_INCOMPLETE.into();
    append(&not_charged).unwrap();

    let all = runtime
        .block_on(PgJournal::read_receipts(
            &db.url(),
            &x402_gateway::ops::receipts::ReceiptQuery::default(),
        ))
        .unwrap();
    assert_eq!(all.len(), 3);
    let query = x402_gateway::ops::receipts::ReceiptQuery {
        refund_candidates: true,
        ..Default::default()
    };
    let rows = runtime
        .block_on(PgJournal::read_receipts(&db.url(), &query))
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].id, "cut");
    assert_eq!(rows[0].reason, BODY_CUT);
    assert_eq!(rows[0].transaction, "0x01");
}

/// Records arriving together are committed together (group commit), and each is still answered
/// for itself: a second `verified` record of an authorization in flight is refused and leaves no
/// event, whatever else its group held.
#[test]
fn records_arriving_together_are_committed_in_groups_and_each_answered_for_itself() {
    use x402_gateway::ops::{Journal, JournalError, PaymentState as S, PgJournal};
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDatabase::create());
    let spool = write_config("").with_file_name("spool.jsonl");
    let journal = PgJournal::open(&db.url(), &spool).unwrap();
    const PAYMENTS: usize = 200;
    const TWICE: usize = 20;
    let mut records: Vec<x402_gateway::ops::JournalEntry> = (0..PAYMENTS)
        .map(|i| entry(&format!("g{i:03}"), S::Verified))
        .collect();
    // Second attempts with the same authorization, in the same burst (their own time, so that
    // each is a record of its own).
    for i in 0..TWICE {
        let mut again = entry(&format!("g{i:03}"), S::Verified);
        again.time = "2099-01-01T00:00:00.000Z".into();
        records.push(again);
    }
    let outcomes = runtime.block_on(futures::future::join_all(
        records.iter().map(|r| journal.append(r.clone())),
    ));
    for i in 0..PAYMENTS {
        let first = &outcomes[i];
        if i < TWICE {
            let second = &outcomes[PAYMENTS + i];
            let refused = [first, second]
                .iter()
                .filter(|o| matches!(o, Err(JournalError::AlreadyRecorded { state: S::Verified })))
                .count();
            let taken = [first, second].iter().filter(|o| o.is_ok()).count();
            assert_eq!((taken, refused), (1, 1), "g{i:03}: {first:?} {second:?}");
        } else {
            assert!(first.is_ok(), "g{i:03}: {first:?}");
        }
    }
    let (events, rows, transactions): (i64, i64, i64) = runtime.block_on(async {
        let client = db.client().await;
        let count = |sql: &'static str| {
            let client = &client;
            async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        (
            count("SELECT count(*) FROM x402_journal_events").await,
            count("SELECT count(*) FROM x402_payments WHERE state = 'verified'").await,
            // The transaction that wrote each row: rows written in one group share it.
            count("SELECT count(DISTINCT xmin::text) FROM x402_payments").await,
        )
    });
    assert_eq!(events, PAYMENTS as i64, "a refused record leaves no event");
    assert_eq!(rows, PAYMENTS as i64);
    assert!(
        transactions < (PAYMENTS / 2) as i64,
        "{PAYMENTS} records arriving together took {transactions} transactions"
    );

    // Every payment ends, again all at once.
    let finals: Vec<_> = (0..PAYMENTS)
        .map(|i| {
            let mut settled = entry(&format!("g{i:03}"), S::Verified).next(S::Settled);
            settled.time = "2099-01-02T00:00:00.000Z".into();
            settled.transaction = format!("0x{i:064x}");
            settled
        })
        .collect();
    let outcomes = runtime.block_on(futures::future::join_all(
        finals.iter().map(|r| journal.append(r.clone())),
    ));
    assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
    let settled: i64 = runtime.block_on(async {
        db.client()
            .await
            .query_one(
                "SELECT count(*) FROM x402_payments WHERE state = 'settled'",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(settled, PAYMENTS as i64);
}
