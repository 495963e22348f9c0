//! The `batch-settlement` channel store on every backend: the same compare-and-set and lease
//! semantics in memory, on the machine's Redis (127.0.0.1:6379) and on its PostgreSQL
//! (127.0.0.1:5432, trust authentication, database `test`); two Redis or PostgreSQL clients
//! ("replicas") racing on one channel let exactly one writer through per version, and a lease one
//! replica holds is refused to the other until it expires.
//!
//! Each Redis test writes under a key prefix of its own and deletes it at the end; each PostgreSQL
//! test works in a schema of its own (the connection's `search_path`) and drops it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use x402_gateway::store::{
    ChannelStore, LocalChannels, PostgresChannels, RedisChannels, RedisStore, StoredChannel,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379";
const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Channel ids as the payment core writes them: 0x and 32 lowercase hex bytes.
fn channel(n: u8) -> String {
    format!("0x{}{n:02x}", "ab".repeat(31))
}

/// A name no other run or test of this run uses.
fn unique(kind: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "x402_test_{kind}_{}_{nanos:x}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A key prefix of this test on the machine's Redis; its keys are deleted on drop.
struct RedisPrefix {
    prefix: String,
}

impl RedisPrefix {
    fn new() -> Self {
        Self {
            prefix: format!("{}:", unique("channels")),
        }
    }

    /// A client of its own, as one gateway replica would have.
    fn replica(&self) -> RedisChannels {
        let text = format!(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n\
             [redis]\nurl = \"{REDIS_URL}\"\nkey_prefix = \"{}\"\ntimeout = \"2s\"\n",
            self.prefix
        );
        let settings = x402_gateway::config::GatewayConfig::parse(
            &text,
            std::path::Path::new("g.toml"),
            &|_| None,
        )
        .expect("a valid configuration")
        .redis
        .expect("[redis] is set");
        RedisChannels::new(Arc::new(
            RedisStore::connect(&settings).expect("the redis client starts"),
        ))
    }

    /// A plain connection for reading what the store wrote.
    fn raw(&self) -> redis::Connection {
        redis::Client::open(REDIS_URL)
            .and_then(|client| client.get_connection())
            .expect("redis on 127.0.0.1:6379 answers")
    }

    fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut self.raw())
            .expect("KEYS answers")
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let keys = self.keys();
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(keys).query(&mut self.raw());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A schema of this test in the database `test`; dropped with its tables on drop.
struct PgSchema {
    name: String,
}

async fn pg_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to PostgreSQL: {e}"));
    tokio::spawn(connection);
    client
}

impl PgSchema {
    async fn create() -> Self {
        let name = unique("channels");
        pg_client(POSTGRES_ADMIN_URL)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("schema created");
        Self { name }
    }

    /// The URL a replica connects with: its tables land in this schema.
    fn url(&self) -> String {
        format!(
            "{POSTGRES_ADMIN_URL}?options=-c%20search_path%3D{}",
            self.name
        )
    }

    async fn replica(&self) -> PostgresChannels {
        PostgresChannels::connect(&self.url())
            .await
            .expect("the channel tables are created")
    }

    /// A connection of its own, for reading what was committed.
    async fn raw(&self) -> tokio_postgres::Client {
        pg_client(&self.url()).await
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        // Drop runs inside the test's runtime: use a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(POSTGRES_ADMIN_URL, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client.batch_execute(&sql).await;
                }
            });
        })
        .join();
    }
}

// ---------------------------------------------------------------------------------------------
// The semantics every backend shares

/// Create, update and delete land only on the version named; a stale version, a second creation
/// and an update of a missing record write nothing; `list` shows exactly the live records; an id
/// used again after a delete never matches a version of its earlier record.
async fn compare_and_set_semantics(store: &dyn ChannelStore) {
    let (a, b) = (channel(1), channel(2));
    assert_eq!(store.load(&a).await.unwrap(), None);
    assert!(store.list().await.unwrap().is_empty());
    assert!(!store.swap(&a, Some(1), Some("{}")).await.unwrap());
    assert!(!store.swap(&a, Some(1), None).await.unwrap());
    // deleting what must not exist holds, and writes nothing
    assert!(store.swap(&a, None, None).await.unwrap());
    assert_eq!(store.load(&a).await.unwrap(), None);

    assert!(store
        .swap(&a, None, Some(r#"{"paid":"10"}"#))
        .await
        .unwrap());
    let created = store.load(&a).await.unwrap().expect("created");
    assert_eq!(created.record, r#"{"paid":"10"}"#);
    assert!(!store
        .swap(&a, None, Some(r#"{"paid":"99"}"#))
        .await
        .unwrap());
    assert_eq!(store.load(&a).await.unwrap().as_ref(), Some(&created));

    assert!(store
        .swap(&a, Some(created.version), Some(r#"{"paid":"20"}"#))
        .await
        .unwrap());
    let updated = store.load(&a).await.unwrap().expect("updated");
    assert_eq!(updated.record, r#"{"paid":"20"}"#);
    assert_eq!(updated.version, created.version + 1);

    // the version read before the update no longer names the record
    assert!(!store
        .swap(&a, Some(created.version), Some(r#"{"paid":"30"}"#))
        .await
        .unwrap());
    assert!(!store.swap(&a, Some(created.version), None).await.unwrap());
    assert!(!store
        .swap(&a, Some(updated.version + 1), Some(r#"{"paid":"30"}"#))
        .await
        .unwrap());
    assert!(!store.swap(&a, Some(u64::MAX), None).await.unwrap());
    assert_eq!(store.load(&a).await.unwrap().as_ref(), Some(&updated));

    assert!(store.swap(&b, None, Some(r#"{"paid":"1"}"#)).await.unwrap());
    let other = store.load(&b).await.unwrap().expect("created");
    let mut listed = store.list().await.unwrap();
    listed.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        listed,
        vec![(a.clone(), updated.clone()), (b.clone(), other.clone())]
    );

    assert!(store.swap(&a, Some(updated.version), None).await.unwrap());
    assert_eq!(store.load(&a).await.unwrap(), None);
    assert_eq!(
        store.list().await.unwrap(),
        vec![(b.clone(), other.clone())]
    );
    assert!(!store
        .swap(&a, Some(updated.version), Some("{}"))
        .await
        .unwrap());
    assert_eq!(store.load(&a).await.unwrap(), None);

    assert!(store.swap(&a, None, Some(r#"{"paid":"5"}"#)).await.unwrap());
    let again = store.load(&a).await.unwrap().expect("created again");
    assert_eq!(again.record, r#"{"paid":"5"}"#);
    assert!(again.version > updated.version);
    for stale in [created.version, updated.version] {
        assert!(!store.swap(&a, Some(stale), Some("{}")).await.unwrap());
    }
    assert_eq!(store.load(&a).await.unwrap().as_ref(), Some(&again));
    assert_eq!(store.load(&b).await.unwrap().as_ref(), Some(&other));
}

/// Writers spread over `replicas` race on one channel, round after round from the version they
/// all read: exactly one wins each round, and the stored record is the winner's.
async fn one_writer_per_version(replicas: &[Arc<dyn ChannelStore>]) {
    let id = channel(7);
    let writers = 12;
    let creations: Vec<_> = (0..writers)
        .map(|writer| {
            let store = replicas[writer % replicas.len()].clone();
            let id = id.clone();
            tokio::spawn(async move {
                let record = format!("{{\"writer\":{writer}}}");
                let won = store.swap(&id, None, Some(&record)).await.unwrap();
                won.then_some(record)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for creation in creations {
        winners.extend(creation.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "creations won: {winners:?}");
    let mut stored = replicas[0].load(&id).await.unwrap().expect("created");
    assert_eq!(stored.record, winners[0]);

    for round in 1..=10 {
        let swaps: Vec<_> = (0..writers)
            .map(|writer| {
                let store = replicas[writer % replicas.len()].clone();
                let id = id.clone();
                let version = stored.version;
                tokio::spawn(async move {
                    let record = format!("{{\"round\":{round},\"writer\":{writer}}}");
                    let won = store.swap(&id, Some(version), Some(&record)).await.unwrap();
                    won.then_some(record)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for swap in swaps {
            winners.extend(swap.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "round {round} won by {winners:?}");
        for replica in replicas {
            let now = replica.load(&id).await.unwrap().expect("present");
            assert_eq!(now.record, winners[0], "round {round}");
            assert_eq!(now.version, stored.version + 1, "round {round}");
        }
        stored = replicas[0].load(&id).await.unwrap().expect("present");
    }
}

/// A lease is the holder's while it renews it, refused to the other replica meanwhile, and
/// free for the other once the holder stops renewing and its ttl passes.
async fn lease_between(first: &dyn ChannelStore, second: &dyn ChannelStore) {
    const TTL_MS: u64 = 300;
    assert!(first.lease("claim", "replica-1", TTL_MS).await.unwrap());
    assert!(!second.lease("claim", "replica-2", TTL_MS).await.unwrap());
    // another name is another lease
    assert!(second.lease("sweep", "replica-2", 60_000).await.unwrap());
    assert!(!first.lease("sweep", "replica-1", 60_000).await.unwrap());
    // a ttl past any clock is a long lease, not an error
    assert!(first.lease("forever", "replica-1", u64::MAX).await.unwrap());
    assert!(!second.lease("forever", "replica-2", 1).await.unwrap());

    // renewed past its first ttl, it stays the first replica's
    let renewing_until = Instant::now() + Duration::from_millis(TTL_MS * 2);
    while Instant::now() < renewing_until {
        assert!(first.lease("claim", "replica-1", TTL_MS).await.unwrap());
        assert!(!second.lease("claim", "replica-2", TTL_MS).await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // left to expire, it passes to the second replica within a bound
    let stopped = Instant::now();
    let deadline = stopped + Duration::from_secs(10);
    while !second.lease("claim", "replica-2", 60_000).await.unwrap() {
        assert!(Instant::now() < deadline, "the lease never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // not before the holder's ttl had passed (a little slack for clock granularity)
    assert!(
        stopped.elapsed() >= Duration::from_millis(TTL_MS - 100),
        "taken over after {:?}",
        stopped.elapsed()
    );
    assert!(!first.lease("claim", "replica-1", TTL_MS).await.unwrap());
    assert!(second.lease("claim", "replica-2", 60_000).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// Memory

#[tokio::test]
async fn local_compare_and_set_semantics() {
    compare_and_set_semantics(&LocalChannels::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_one_writer_per_version() {
    let store: Arc<dyn ChannelStore> = Arc::new(LocalChannels::new());
    one_writer_per_version(&[store.clone(), store]).await;
}

#[tokio::test]
async fn local_lease() {
    let store = LocalChannels::new();
    lease_between(&store, &store).await;
    assert_eq!(
        store.durability(),
        "memory (lost on restart; one process only)"
    );
}

// ---------------------------------------------------------------------------------------------
// Redis

#[tokio::test]
async fn redis_compare_and_set_semantics() {
    let prefix = RedisPrefix::new();
    compare_and_set_semantics(&prefix.replica()).await;
}

/// What the store keeps in Redis: a hash per channel under the prefix and an index of live ids,
/// so a listing needs no SCAN; a delete leaves only the version behind.
#[tokio::test]
async fn redis_keeps_a_hash_per_channel_and_an_index() {
    use redis::Commands;
    let prefix = RedisPrefix::new();
    let store = prefix.replica();
    let id = channel(3);
    assert!(store.swap(&id, None, Some(r#"{"n":1}"#)).await.unwrap());
    assert!(store.swap(&id, Some(1), Some(r#"{"n":2}"#)).await.unwrap());

    let mut raw = prefix.raw();
    let hash_key = format!("{}channel:{id}", prefix.prefix);
    let index_key = format!("{}channels:index", prefix.prefix);
    let fields: std::collections::HashMap<String, String> = raw.hgetall(&hash_key).unwrap();
    assert_eq!(fields.get("record").map(String::as_str), Some(r#"{"n":2}"#));
    assert_eq!(fields.get("version").map(String::as_str), Some("2"));
    let members: Vec<String> = raw.smembers(&index_key).unwrap();
    assert_eq!(members, vec![id.clone()]);
    let mut keys = prefix.keys();
    keys.sort();
    assert_eq!(keys, vec![hash_key.clone(), index_key.clone()]);

    assert!(store.swap(&id, Some(2), None).await.unwrap());
    let fields: std::collections::HashMap<String, String> = raw.hgetall(&hash_key).unwrap();
    assert_eq!(fields.get("record"), None);
    assert_eq!(fields.get("version").map(String::as_str), Some("3"));
    let members: Vec<String> = raw.smembers(&index_key).unwrap();
    assert!(members.is_empty());

    assert!(store.lease("claim", "replica-1", 60_000).await.unwrap());
    let lease_key = format!("{}lease:claim", prefix.prefix);
    let holder: Option<String> = raw.get(&lease_key).unwrap();
    assert_eq!(holder.as_deref(), Some("replica-1"));
    let ttl: i64 = raw.pttl(&lease_key).unwrap();
    assert!(ttl > 50_000 && ttl <= 60_000, "pttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_two_replicas_one_writer_per_version() {
    let prefix = RedisPrefix::new();
    let replicas: Vec<Arc<dyn ChannelStore>> =
        vec![Arc::new(prefix.replica()), Arc::new(prefix.replica())];
    one_writer_per_version(&replicas).await;
}

#[tokio::test]
async fn redis_lease_held_by_one_replica_is_refused_to_the_other_until_it_expires() {
    let prefix = RedisPrefix::new();
    lease_between(&prefix.replica(), &prefix.replica()).await;
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

#[tokio::test]
async fn postgres_compare_and_set_semantics() {
    let schema = PgSchema::create().await;
    compare_and_set_semantics(&schema.replica().await).await;
}

/// What another connection sees once a write returned: the row is committed, and a delete keeps
/// the row with its version and no record.
#[tokio::test]
async fn postgres_writes_are_committed_when_they_return() {
    let schema = PgSchema::create().await;
    let store = schema.replica().await;
    // a second replica starting on the created tables leaves them as they are
    let second = schema.replica().await;
    let id = channel(4);
    assert!(store.swap(&id, None, Some(r#"{"n":1}"#)).await.unwrap());
    assert!(second.swap(&id, Some(1), Some(r#"{"n":2}"#)).await.unwrap());

    let raw = schema.raw().await;
    let row = raw
        .query_one(
            "SELECT record, version FROM x402_channels WHERE channel_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some(r#"{"n":2}"#)
    );
    assert_eq!(row.get::<_, i64>(1), 2);

    assert!(store.swap(&id, Some(2), None).await.unwrap());
    let row = raw
        .query_one(
            "SELECT record, version FROM x402_channels WHERE channel_id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0), None);
    assert_eq!(row.get::<_, i64>(1), 3);
    assert_eq!(
        store.list().await.unwrap(),
        Vec::<(String, StoredChannel)>::new()
    );

    assert!(store.lease("claim", "replica-1", 60_000).await.unwrap());
    let row = raw
        .query_one(
            "SELECT holder, expires_at_ms - (extract(epoch FROM clock_timestamp()) * 1000)::bigint \
             FROM x402_leases WHERE name = 'claim'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "replica-1");
    let left: i64 = row.get(1);
    assert!(left > 50_000 && left <= 60_000, "{left} ms left");
    assert!(store.durability().starts_with("postgresql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_two_replicas_one_writer_per_version() {
    let schema = PgSchema::create().await;
    let replicas: Vec<Arc<dyn ChannelStore>> = vec![
        Arc::new(schema.replica().await),
        Arc::new(schema.replica().await),
    ];
    one_writer_per_version(&replicas).await;
}

#[tokio::test]
async fn postgres_lease_held_by_one_replica_is_refused_to_the_other_until_it_expires() {
    let schema = PgSchema::create().await;
    lease_between(&schema.replica().await, &schema.replica().await).await;
}

/// Access grants and sign-in nonces in the same database: a grant outlives a shorter one, is
/// seen by another replica and listed; a nonce is taken once across replicas, and again only once
/// what was remembered of it expired.
#[tokio::test]
async fn postgres_sign_in_grants_are_shared_and_nonces_taken_once() {
    use x402_gateway::store::SignInStore;
    let schema = PgSchema::create().await;
    let one = schema.replica().await.sign_in();
    let two = schema.replica().await.sign_in();
    one.grant("GET /r /r", "0xAbC", 5_000).await.expect("grant");
    one.grant("GET /r /r", "0xabc", 3_000)
        .await
        .expect("shorter grant");
    assert!(two
        .granted("GET /r /r", "0xABC", 4_999)
        .await
        .expect("granted"));
    assert!(!two
        .granted("GET /r /r", "0xabc", 5_000)
        .await
        .expect("expired"));
    assert!(!two
        .granted("GET /other /other", "0xabc", 1)
        .await
        .expect("other"));
    let listed = two.grants(1_000).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].resource.as_str(),
            listed[0].payer.as_str(),
            listed[0].until_ms
        ),
        ("GET /r /r", "0xabc", 5_000)
    );

    let (a, b) = tokio::join!(
        one.use_nonce("n1", 10_000, 1_000),
        two.use_nonce("n1", 10_000, 1_000)
    );
    let taken = [a.expect("answered"), b.expect("answered")];
    assert_eq!(
        taken.iter().filter(|t| **t).count(),
        1,
        "one replica takes it: {taken:?}"
    );
    assert!(!one.use_nonce("n1", 20_000, 9_999).await.expect("answered"));
    assert!(
        two.use_nonce("n1", 20_000, 10_000).await.expect("answered"),
        "free again once expired"
    );
    let row = schema
        .raw()
        .await
        .query_one(
            "SELECT until_ms FROM x402_sign_in_nonces WHERE nonce = 'n1'",
            &[],
        )
        .await
        .expect("kept");
    assert_eq!(row.get::<_, i64>(0), 20_000);
}
