//! The state of `batch-settlement` payment channels: one opaque record per channel (JSON the
//! payment core writes), changed only by compare-and-set so that replicas taking vouchers on the
//! same channel never overwrite each other, and a lease so that one replica at a time runs the
//! claim job.
//!
//! The store never reads a record: what a channel owes and how a voucher changes it is the
//! payment core's business. It only guarantees that a write lands on the version the writer read.
//!
//! A deleted record leaves its version behind, so a channel id used again continues the count:
//! a writer that read the old record can never overwrite the new one (compare-and-set on a count
//! that restarted at 1 could not tell them apart). A new id's first record is at version 1; a
//! delete with `expected` `None` writes nothing and succeeds when there is no record.

use super::redis::{arg, RedisStore};
use super::StoreError;
use async_trait::async_trait;
use dashmap::mapref::entry::Entry as DashEntry;
use dashmap::DashMap;
use deadpool_postgres::Pool;
use redis::Script;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// One channel's stored record (JSON written by the payment core) and the version a
/// compare-and-set names: every successful write bumps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChannel {
    pub record: String,
    pub version: u64,
}

/// Where channel records and the claim lease are kept.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    /// The record of `channel_id`, if any.
    async fn load(&self, channel_id: &str) -> Result<Option<StoredChannel>, StoreError>;
    /// Writes `next` (`None` deletes the record) only if the record is still at `expected`
    /// (`None`: only if there is no record). `Ok(false)` when another writer got there first;
    /// nothing is written then.
    async fn swap(
        &self,
        channel_id: &str,
        expected: Option<u64>,
        next: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// Every channel's id and record (for the claim job and operators' listings).
    async fn list(&self) -> Result<Vec<(String, StoredChannel)>, StoreError>;
    /// Takes or renews the lease `name` for `holder` for `ttl_ms`: `true` if `holder` now holds it
    /// (it was free, expired, or already `holder`'s), `false` if another holder's lease is live.
    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError>;
    /// What backs the store and what a write's durability is (for logs and the README), e.g. "memory (lost on restart)".
    fn durability(&self) -> &'static str;
}

/// The longest lease taken: a longer ttl is cut to it (no claim job needs a lease for longer, and
/// Redis refuses an expiry past the end of its clock).
const LONGEST_LEASE_MS: u64 = 365 * 24 * 60 * 60 * 1000;

/// A channel's slot: its record, or the version a deleted record left behind.
#[derive(Debug)]
struct Slot {
    record: Option<String>,
    version: u64,
}

/// Whether a slot holding `record` at `version` is in the state `expected` names: no record, or
/// a record at that version.
fn matches(record: Option<&String>, version: u64, expected: Option<u64>) -> bool {
    match (record, expected) {
        (None, None) => true,
        (Some(_), Some(wanted)) => version == wanted,
        _ => false,
    }
}

/// Channels and leases of one process.
#[derive(Debug, Default)]
pub struct LocalChannels {
    /// The compare and the write happen under the shard lock of the channel's entry.
    channels: DashMap<String, Slot>,
    /// Held while a lease is decided: leases are rare and few, a single lock is enough.
    leases: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalChannels {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ChannelStore for LocalChannels {
    async fn load(&self, channel_id: &str) -> Result<Option<StoredChannel>, StoreError> {
        Ok(self.channels.get(channel_id).and_then(|slot| {
            slot.record.as_ref().map(|record| StoredChannel {
                record: record.clone(),
                version: slot.version,
            })
        }))
    }

    async fn swap(
        &self,
        channel_id: &str,
        expected: Option<u64>,
        next: Option<&str>,
    ) -> Result<bool, StoreError> {
        match self.channels.entry(channel_id.to_string()) {
            DashEntry::Vacant(vacant) => {
                if expected.is_some() {
                    return Ok(false);
                }
                if let Some(record) = next {
                    vacant.insert(Slot {
                        record: Some(record.to_string()),
                        version: 1,
                    });
                }
                Ok(true)
            }
            DashEntry::Occupied(mut occupied) => {
                let slot = occupied.get_mut();
                if !matches(slot.record.as_ref(), slot.version, expected) {
                    return Ok(false);
                }
                if slot.record.is_none() && next.is_none() {
                    // Nothing there and nothing to write: the version stays.
                    return Ok(true);
                }
                slot.record = next.map(str::to_string);
                slot.version += 1;
                Ok(true)
            }
        }
    }

    async fn list(&self) -> Result<Vec<(String, StoredChannel)>, StoreError> {
        Ok(self
            .channels
            .iter()
            .filter_map(|entry| {
                entry.record.as_ref().map(|record| {
                    (
                        entry.key().clone(),
                        StoredChannel {
                            record: record.clone(),
                            version: entry.version,
                        },
                    )
                })
            })
            .collect())
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let now = Instant::now();
        let until = now
            .checked_add(Duration::from_millis(ttl_ms.min(LONGEST_LEASE_MS)))
            .unwrap_or(now);
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match leases.entry(name.to_string()) {
            Entry::Vacant(vacant) => {
                vacant.insert((holder.to_string(), until));
                Ok(true)
            }
            Entry::Occupied(mut occupied) => {
                let (current, expires) = occupied.get();
                if current != holder && *expires > now {
                    return Ok(false);
                }
                occupied.insert((holder.to_string(), until));
                Ok(true)
            }
        }
    }

    fn durability(&self) -> &'static str {
        "memory (lost on restart; one process only)"
    }
}

/// Reads a channel: `[record, version]`, the record nil when there is none.
static LOAD: LazyLock<Script> =
    LazyLock::new(|| Script::new(r"return redis.call('HMGET', KEYS[1], 'record', 'version')"));

/// KEYS: the channel's hash, the index of channel ids. ARGV: the expected version (`''` for no
/// record), `'set'` or `'delete'`, the record, the channel id. Returns 1 if written.
static SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local stored = redis.call('HMGET', KEYS[1], 'record', 'version')
          if ARGV[1] == '' then
            if stored[1] then return 0 end
          elseif (not stored[1]) or stored[2] ~= ARGV[1] then
            return 0
          end
          if ARGV[2] == 'delete' then
            if not stored[1] then return 1 end
            redis.call('HDEL', KEYS[1], 'record')
            redis.call('HINCRBY', KEYS[1], 'version', 1)
            redis.call('SREM', KEYS[2], ARGV[4])
            return 1
          end
          redis.call('HSET', KEYS[1], 'record', ARGV[3])
          redis.call('HINCRBY', KEYS[1], 'version', 1)
          redis.call('SADD', KEYS[2], ARGV[4])
          return 1",
    )
});

/// KEYS: the index of channel ids. ARGV: the prefix of a channel's key. Returns `id, record,
/// version` triples, flattened. The script reads channel keys it builds itself, which one Redis
/// allows (Redis Cluster would not, and the gateway does not use it).
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local out = {}
          for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            local stored = redis.call('HMGET', ARGV[1] .. id, 'record', 'version')
            if stored[1] then
              out[#out + 1] = id
              out[#out + 1] = stored[1]
              out[#out + 1] = stored[2]
            end
          end
          return out",
    )
});

/// KEYS: the lease. ARGV: the holder, the ttl in milliseconds. Redis expires the key, so a
/// lease whose holder died is free again after its ttl.
static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local current = redis.call('GET', KEYS[1])
          if current and current ~= ARGV[1] then return 0 end
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return 1",
    )
});

/// Channels and leases every replica pointing at one Redis shares; each operation is one
/// script, so the compare and the write are atomic across replicas.
pub struct RedisChannels {
    store: Arc<RedisStore>,
}

impl RedisChannels {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self { store }
    }

    fn channel_key(&self, channel_id: &str) -> String {
        self.store.key("channel", channel_id)
    }

    fn index_key(&self) -> String {
        self.store.key("channels", "index")
    }
}

/// A version as Redis stores it; anything else is refused rather than guessed.
fn parse_version(text: &str) -> Result<u64, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("channel version {text:?} is not a number")))
}

#[async_trait]
impl ChannelStore for RedisChannels {
    async fn load(&self, channel_id: &str) -> Result<Option<StoredChannel>, StoreError> {
        let stored: Vec<Option<String>> = self
            .store
            .eval(
                "channel_load",
                &LOAD,
                vec![self.channel_key(channel_id)],
                Vec::new(),
            )
            .await?;
        match stored.as_slice() {
            [Some(record), Some(version)] => Ok(Some(StoredChannel {
                record: record.clone(),
                version: parse_version(version)?,
            })),
            [None, _] => Ok(None),
            _ => Err(StoreError::Corrupt(format!(
                "channel {channel_id} has a record without a version"
            ))),
        }
    }

    async fn swap(
        &self,
        channel_id: &str,
        expected: Option<u64>,
        next: Option<&str>,
    ) -> Result<bool, StoreError> {
        let expected = expected.map(|v| v.to_string()).unwrap_or_default();
        let (operation, record) = match next {
            Some(record) => ("set", record),
            None => ("delete", ""),
        };
        let written: i64 = self
            .store
            .eval(
                "channel_swap",
                &SWAP,
                vec![self.channel_key(channel_id), self.index_key()],
                vec![arg(expected), arg(operation), arg(record), arg(channel_id)],
            )
            .await?;
        Ok(written == 1)
    }

    async fn list(&self) -> Result<Vec<(String, StoredChannel)>, StoreError> {
        let flat: Vec<String> = self
            .store
            .eval(
                "channel_list",
                &LIST,
                vec![self.index_key()],
                vec![arg(self.channel_key(""))],
            )
            .await?;
        flat.chunks(3)
            .map(|triple| match triple {
                [id, record, version] => Ok((
                    id.clone(),
                    StoredChannel {
                        record: record.clone(),
                        version: parse_version(version)?,
                    },
                )),
                _ => Err(StoreError::Corrupt("channel listing is incomplete".into())),
            })
            .collect()
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let held: i64 = self
            .store
            .eval(
                "channel_lease",
                &LEASE,
                vec![self.store.key("lease", name)],
                // Redis refuses a zero expiry.
                vec![arg(holder), arg(ttl_ms.clamp(1, LONGEST_LEASE_MS))],
            )
            .await?;
        Ok(held == 1)
    }

    fn durability(&self) -> &'static str {
        "redis (shared by replicas; survives a restart only as far as the server's AOF/RDB persistence goes)"
    }
}

/// Longest wait for the database on a request's path; past it the database counts as down.
const DATABASE_TIMEOUT: Duration = Duration::from_secs(3);

/// The key of the advisory lock that serialises table creation across replicas starting together
/// (`CREATE TABLE IF NOT EXISTS` alone can fail when two run at once).
const SCHEMA_LOCK: i64 = 0x7834_3032_6368_6e01;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS x402_channels (
        channel_id text PRIMARY KEY,
        record text,
        version bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS x402_leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires_at_ms bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS x402_grants (
        grant_key text PRIMARY KEY,
        resource text NOT NULL,
        payer text NOT NULL,
        until_ms bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS x402_sign_in_nonces (
        nonce text PRIMARY KEY,
        until_ms bigint NOT NULL
    )";

/// The database's clock in unix milliseconds: leases are judged by one clock whichever replica
/// asks, so replicas' clock skew cannot let two of them hold one lease.
const DB_NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

pub(super) fn db_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// Channels and leases in PostgreSQL, shared by every replica on the journal's database; a write
/// has committed when the call returns.
pub struct PostgresChannels {
    pool: Pool,
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for PostgresChannels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresChannels").finish_non_exhaustive()
    }
}

/// A pool for `url` set up as the journal's is; nothing is connected yet. Errors never carry the
/// URL (it may hold a password).
fn pool(url: &str, max_size: usize) -> Result<Pool, StoreError> {
    super::postgres_pool(url, max_size).map_err(StoreError::Database)
}

/// A runtime on a thread of its own that lives as long as the process, so that connections
/// outlive the start-up runtime and never depend on which proxy thread asked.
fn database_runtime() -> Result<tokio::runtime::Handle, StoreError> {
    super::postgres::database_runtime("channels-db").map_err(StoreError::Database)
}

async fn create_tables(pool: Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(db_error)?;
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute(SCHEMA).await.map_err(db_error)?;
    tx.commit().await.map_err(db_error)
}

/// A stored version as the store hands it out; a negative one (never written here) is corrupt.
fn version_of(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored)
        .map_err(|_| StoreError::Corrupt(format!("channel version {stored} is negative")))
}

impl PostgresChannels {
    /// Connects to `url` and creates the tables if they are missing. Blocks; call it outside any
    /// async runtime (as the journal is opened).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let channels = Self::unopened(url)?;
        channels
            .runtime
            .block_on(create_tables(channels.pool.clone()))?;
        Ok(channels)
    }

    /// [`Self::open`] from inside an async runtime.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let channels = Self::unopened(url)?;
        channels.run(create_tables(channels.pool.clone())).await?;
        Ok(channels)
    }

    fn unopened(url: &str) -> Result<Self, StoreError> {
        let runtime = database_runtime()?;
        Ok(Self {
            pool: pool(url, 8)?,
            runtime,
        })
    }

    /// Runs `work` on the store's runtime, bounded by [`DATABASE_TIMEOUT`], from any runtime.
    async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        run_on(&self.runtime, work).await
    }

    /// Access grants and sign-in nonces in the same database (tables created with the channels').
    pub fn sign_in(&self) -> super::sign_in::PostgresSignIn {
        super::sign_in::PostgresSignIn::new(self.pool.clone(), self.runtime.clone())
    }
}

/// Runs `work` on `runtime`, bounded by [`DATABASE_TIMEOUT`], from any runtime: the database's
/// connections live there, whichever proxy thread asks.
pub(super) async fn run_on<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    runtime
        .spawn(async move {
            tokio::time::timeout(DATABASE_TIMEOUT * 2, work)
                .await
                .unwrap_or_else(|_| Err(StoreError::Database("timed out".into())))
        })
        .await
        .map_err(db_error)?
}

#[async_trait]
impl ChannelStore for PostgresChannels {
    async fn load(&self, channel_id: &str) -> Result<Option<StoredChannel>, StoreError> {
        let pool = self.pool.clone();
        let id = channel_id.to_string();
        self.run(async move {
            let client = pool.get().await.map_err(db_error)?;
            let statement = client
                .prepare_cached(
                    "SELECT record, version FROM x402_channels \
                     WHERE channel_id = $1 AND record IS NOT NULL",
                )
                .await
                .map_err(db_error)?;
            let row = client
                .query_opt(&statement, &[&id])
                .await
                .map_err(db_error)?;
            row.map(|row| {
                Ok(StoredChannel {
                    record: row.try_get(0).map_err(db_error)?,
                    version: version_of(row.try_get(1).map_err(db_error)?)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn swap(
        &self,
        channel_id: &str,
        expected: Option<u64>,
        next: Option<&str>,
    ) -> Result<bool, StoreError> {
        let expected = match expected.map(i64::try_from) {
            None => None,
            Some(Ok(version)) => Some(version),
            // No stored version is that large: the record is not at it.
            Some(Err(_)) => return Ok(false),
        };
        let pool = self.pool.clone();
        let id = channel_id.to_string();
        let next = next.map(str::to_string);
        self.run(async move {
            let client = pool.get().await.map_err(db_error)?;
            // Each statement is one implicit transaction: committed when it returns.
            let written = match (expected, next) {
                (None, Some(record)) => {
                    // New, or over the version a deleted record left behind.
                    let statement = client
                        .prepare_cached(
                            "INSERT INTO x402_channels (channel_id, record, version) \
                             VALUES ($1, $2, 1) \
                             ON CONFLICT (channel_id) DO UPDATE SET record = EXCLUDED.record, \
                                 version = x402_channels.version + 1, updated_at = now() \
                             WHERE x402_channels.record IS NULL",
                        )
                        .await
                        .map_err(db_error)?;
                    client
                        .execute(&statement, &[&id, &record])
                        .await
                        .map_err(db_error)?
                }
                (None, None) => {
                    // Deleting what must not exist writes nothing; it holds if nothing is there.
                    let statement = client
                        .prepare_cached(
                            "SELECT 1 FROM x402_channels \
                             WHERE channel_id = $1 AND record IS NOT NULL",
                        )
                        .await
                        .map_err(db_error)?;
                    let present = client
                        .query_opt(&statement, &[&id])
                        .await
                        .map_err(db_error)?;
                    u64::from(present.is_none())
                }
                (Some(version), Some(record)) => {
                    let statement = client
                        .prepare_cached(
                            "UPDATE x402_channels \
                             SET record = $2, version = version + 1, updated_at = now() \
                             WHERE channel_id = $1 AND version = $3 AND record IS NOT NULL",
                        )
                        .await
                        .map_err(db_error)?;
                    client
                        .execute(&statement, &[&id, &record, &version])
                        .await
                        .map_err(db_error)?
                }
                (Some(version), None) => {
                    // The row stays with its version, so a re-used id continues the count.
                    let statement = client
                        .prepare_cached(
                            "UPDATE x402_channels \
                             SET record = NULL, version = version + 1, updated_at = now() \
                             WHERE channel_id = $1 AND version = $2 AND record IS NOT NULL",
                        )
                        .await
                        .map_err(db_error)?;
                    client
                        .execute(&statement, &[&id, &version])
                        .await
                        .map_err(db_error)?
                }
            };
            Ok(written == 1)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<(String, StoredChannel)>, StoreError> {
        let pool = self.pool.clone();
        self.run(async move {
            let client = pool.get().await.map_err(db_error)?;
            let rows = client
                .query(
                    "SELECT channel_id, record, version FROM x402_channels \
                     WHERE record IS NOT NULL ORDER BY channel_id",
                    &[],
                )
                .await
                .map_err(db_error)?;
            rows.iter()
                .map(|row| {
                    Ok((
                        row.try_get(0).map_err(db_error)?,
                        StoredChannel {
                            record: row.try_get(1).map_err(db_error)?,
                            version: version_of(row.try_get(2).map_err(db_error)?)?,
                        },
                    ))
                })
                .collect()
        })
        .await
    }

    async fn lease(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let ttl = i64::try_from(ttl_ms.min(LONGEST_LEASE_MS)).unwrap_or(i64::MAX / 2);
        let pool = self.pool.clone();
        let name = name.to_string();
        let holder = holder.to_string();
        self.run(async move {
            let client = pool.get().await.map_err(db_error)?;
            // One statement: the row lock of the upsert makes the check and the take atomic.
            let statement = client
                .prepare_cached(&format!(
                    "INSERT INTO x402_leases (name, holder, expires_at_ms) \
                     VALUES ($1, $2, {DB_NOW_MS} + $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                         expires_at_ms = EXCLUDED.expires_at_ms \
                     WHERE x402_leases.holder = EXCLUDED.holder \
                        OR x402_leases.expires_at_ms <= {DB_NOW_MS}"
                ))
                .await
                .map_err(db_error)?;
            let taken = client
                .execute(&statement, &[&name, &holder, &ttl])
                .await
                .map_err(db_error)?;
            Ok(taken == 1)
        })
        .await
    }

    fn durability(&self) -> &'static str {
        "postgresql (shared by replicas; each write committed before it returns)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHANNEL: &str = "0x00000000000000000000000000000000000000000000000000000000000000c1";

    #[tokio::test]
    async fn a_record_is_created_updated_and_deleted_only_from_the_version_named() {
        let store = LocalChannels::new();
        assert_eq!(store.load(CHANNEL).await.unwrap(), None);
        // updating or deleting a record that does not exist writes nothing
        assert!(!store.swap(CHANNEL, Some(1), Some("{}")).await.unwrap());
        assert!(!store.swap(CHANNEL, Some(1), None).await.unwrap());
        assert_eq!(store.load(CHANNEL).await.unwrap(), None);

        assert!(store.swap(CHANNEL, None, Some(r#"{"n":1}"#)).await.unwrap());
        let created = store.load(CHANNEL).await.unwrap().expect("created");
        assert_eq!(created.record, r#"{"n":1}"#);
        // a second creation is refused and leaves the first
        assert!(!store.swap(CHANNEL, None, Some(r#"{"n":9}"#)).await.unwrap());
        assert_eq!(store.load(CHANNEL).await.unwrap(), Some(created.clone()));

        assert!(store
            .swap(CHANNEL, Some(created.version), Some(r#"{"n":2}"#))
            .await
            .unwrap());
        let updated = store.load(CHANNEL).await.unwrap().expect("updated");
        assert_eq!(updated.record, r#"{"n":2}"#);
        assert!(updated.version > created.version);
        // the version read before the update is stale now
        assert!(!store
            .swap(CHANNEL, Some(created.version), Some(r#"{"n":3}"#))
            .await
            .unwrap());
        assert!(!store
            .swap(CHANNEL, Some(created.version), None)
            .await
            .unwrap());
        assert_eq!(store.load(CHANNEL).await.unwrap(), Some(updated.clone()));
        assert_eq!(
            store.list().await.unwrap(),
            vec![(CHANNEL.to_string(), updated.clone())]
        );

        assert!(store
            .swap(CHANNEL, Some(updated.version), None)
            .await
            .unwrap());
        assert_eq!(store.load(CHANNEL).await.unwrap(), None);
        assert!(store.list().await.unwrap().is_empty());

        // the id used again continues the count: the old version never names the new record
        assert!(store.swap(CHANNEL, None, Some(r#"{"n":4}"#)).await.unwrap());
        let again = store.load(CHANNEL).await.unwrap().expect("re-created");
        assert!(again.version > updated.version);
        assert!(!store
            .swap(CHANNEL, Some(updated.version), Some(r#"{"n":5}"#))
            .await
            .unwrap());
        assert_eq!(store.load(CHANNEL).await.unwrap(), Some(again));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_swaps_from_one_version_let_exactly_one_writer_through() {
        let store = Arc::new(LocalChannels::new());
        assert!(store.swap(CHANNEL, None, Some("0")).await.unwrap());
        for round in 1..=20u64 {
            let version = store.load(CHANNEL).await.unwrap().expect("present").version;
            let writers: Vec<_> = (0..16)
                .map(|writer| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let record = format!("{round}:{writer}");
                        let won = store
                            .swap(CHANNEL, Some(version), Some(&record))
                            .await
                            .unwrap();
                        won.then_some(record)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for writer in writers {
                winners.extend(writer.await.unwrap());
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            let stored = store.load(CHANNEL).await.unwrap().expect("present");
            assert_eq!(stored.record, winners[0]);
            assert_eq!(stored.version, version + 1);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creations_let_exactly_one_writer_through() {
        let store = Arc::new(LocalChannels::new());
        let writers: Vec<_> = (0..16)
            .map(|writer| {
                let store = store.clone();
                tokio::spawn(async move {
                    let record = writer.to_string();
                    let won = store.swap(CHANNEL, None, Some(&record)).await.unwrap();
                    won.then_some(record)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for writer in writers {
            winners.extend(writer.await.unwrap());
        }
        assert_eq!(winners.len(), 1);
        let stored = store.load(CHANNEL).await.unwrap().expect("created");
        assert_eq!(stored.record, winners[0]);
    }

    #[tokio::test]
    async fn a_lease_is_taken_renewed_refused_to_others_and_free_once_expired() {
        let store = LocalChannels::new();
        assert!(store.lease("claim", "replica-a", 60_000).await.unwrap());
        assert!(store.lease("claim", "replica-a", 60_000).await.unwrap());
        assert!(!store.lease("claim", "replica-b", 60_000).await.unwrap());
        // another lease is independent
        assert!(store.lease("other", "replica-b", 60_000).await.unwrap());

        assert!(store.lease("short", "replica-a", 30).await.unwrap());
        assert!(!store.lease("short", "replica-b", 30).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !store.lease("short", "replica-b", 60_000).await.unwrap() {
            assert!(Instant::now() < deadline, "the lease never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // now b's, and refused back to a
        assert!(!store.lease("short", "replica-a", 60_000).await.unwrap());
    }
}
