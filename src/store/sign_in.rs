//! Sign-in grants and used sign-in nonces: in this process, or in Redis so that every replica
//! honours one grant and refuses a nonce any replica saw.

use super::channels::{db_error, run_on};
use super::redis::{arg, RedisStore};
use super::StoreError;
use async_trait::async_trait;
use dashmap::DashMap;
use redis::Script;
use std::sync::{Arc, LazyLock};

/// Where sign-in grants and used nonces are kept.
#[async_trait]
pub trait SignInStore: Send + Sync {
    /// Lets `payer` sign in to `resource` until `until_ms` (unix milliseconds); a longer grant
    /// already held is kept.
    async fn grant(&self, resource: &str, payer: &str, until_ms: i64) -> Result<(), StoreError>;
    /// Whether `payer` may sign in to `resource` at `now_ms`.
    async fn granted(&self, resource: &str, payer: &str, now_ms: i64) -> Result<bool, StoreError>;
    /// Uses `nonce` once: `true` the first time, `false` if it was used before. It is remembered
    /// until `until_ms`, after which the message carrying it is refused as too old anyway.
    async fn use_nonce(&self, nonce: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError>;
    /// The grants live at `now_ms`, for operators.
    async fn grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError>;
}

/// One live access grant, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    /// The route and the canonical path bought.
    pub resource: String,
    pub payer: String,
    /// Unix milliseconds the grant ends.
    pub until_ms: i64,
}

/// The key of a grant: addresses compare case-insensitively.
fn grant_key(resource: &str, payer: &str) -> String {
    format!("{resource}\n{}", payer.to_ascii_lowercase())
}

/// How many remembered entries trigger a sweep of expired ones.
const SWEEP_ABOVE: usize = 100_000;

/// Grants and nonces of one process.
#[derive(Debug, Default)]
pub struct LocalSignIn {
    grants: DashMap<String, i64>,
    nonces: DashMap<String, i64>,
}

impl LocalSignIn {
    pub fn new() -> Self {
        Self::default()
    }
}

fn sweep(map: &DashMap<String, i64>, now_ms: i64) {
    if map.len() > SWEEP_ABOVE {
        map.retain(|_, until| *until > now_ms);
    }
}

#[async_trait]
impl SignInStore for LocalSignIn {
    async fn grant(&self, resource: &str, payer: &str, until_ms: i64) -> Result<(), StoreError> {
        sweep(&self.grants, until_ms.min(crate::time::unix_now_ms()));
        let mut entry = self.grants.entry(grant_key(resource, payer)).or_insert(0);
        *entry = (*entry).max(until_ms);
        Ok(())
    }

    async fn granted(&self, resource: &str, payer: &str, now_ms: i64) -> Result<bool, StoreError> {
        Ok(self
            .grants
            .get(&grant_key(resource, payer))
            .is_some_and(|until| *until > now_ms))
    }

    async fn grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        Ok(self
            .grants
            .iter()
            .filter(|e| *e.value() > now_ms)
            .filter_map(|e| {
                let (resource, payer) = e.key().split_once('\n')?;
                Some(Grant {
                    resource: resource.to_string(),
                    payer: payer.to_string(),
                    until_ms: *e.value(),
                })
            })
            .collect())
    }

    async fn use_nonce(&self, nonce: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        sweep(&self.nonces, now_ms);
        let mut entry = self.nonces.entry(nonce.to_string()).or_insert(i64::MIN);
        if *entry > now_ms {
            return Ok(false);
        }
        *entry = until_ms.max(now_ms + 1);
        Ok(true)
    }
}

/// A grant outlives a shorter one, never the other way round.
static GRANT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local left = redis.call('PTTL', KEYS[1])
          if left < tonumber(ARGV[1]) then
            redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
          end
          return 1",
    )
});

/// Every grant's record and remaining time, by scanning the grant keys (at most 100,000).
static LIST_GRANTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local out = {}
          local cursor = '0'
          repeat
            local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
            cursor = page[1]
            for _, key in ipairs(page[2]) do
              local value = redis.call('GET', key)
              local left = redis.call('PTTL', key)
              if value and left > 0 then table.insert(out, {value, left}) end
            end
          until cursor == '0' or #out >= 100000
          return out",
    )
});

static GRANTED: LazyLock<Script> =
    LazyLock::new(|| Script::new(r"return redis.call('EXISTS', KEYS[1])"));

static USE_NONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 1 end
          return 0",
    )
});

/// Grants and nonces every replica shares.
pub struct RedisSignIn {
    store: Arc<RedisStore>,
}

impl RedisSignIn {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self { store }
    }

    /// Keys name a digest, so that neither addresses nor paths appear in Redis key listings.
    fn key(&self, kind: &str, text: &str) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(text.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.store.key(kind, &hex)
    }
}

/// Milliseconds from `now_ms` to `until_ms`, at least 1 (Redis refuses a zero expiry).
fn ttl_ms(until_ms: i64, now_ms: i64) -> i64 {
    (until_ms - now_ms).max(1)
}

#[async_trait]
impl SignInStore for RedisSignIn {
    async fn grant(&self, resource: &str, payer: &str, until_ms: i64) -> Result<(), StoreError> {
        let key = self.key("grant", &grant_key(resource, payer));
        let ttl = ttl_ms(until_ms, crate::time::unix_now_ms());
        // The record says what the grant is for (the key is a digest), for operators' listings.
        let record = serde_json::json!({"resource": resource, "payer": payer}).to_string();
        self.store
            .eval::<i64>(
                "sign_in_grant",
                &GRANT,
                vec![key],
                vec![arg(ttl), arg(record)],
            )
            .await
            .map(|_| ())
    }

    async fn grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let pattern = self.store.key("grant", "*");
        let rows: Vec<(String, i64)> = self
            .store
            .eval(
                "sign_in_grants",
                &LIST_GRANTS,
                Vec::new(),
                vec![arg(pattern)],
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|(record, left_ms)| {
                let parsed: serde_json::Value = serde_json::from_str(&record).unwrap_or_default();
                let text = |k: &str| {
                    parsed
                        .get(k)
                        .and_then(|v| v.as_str())
                        .unwrap_or("(unrecorded)")
                        .to_string()
                };
                Grant {
                    resource: text("resource"),
                    payer: text("payer"),
                    until_ms: now_ms.saturating_add(left_ms),
                }
            })
            .collect())
    }

    async fn granted(&self, resource: &str, payer: &str, _now_ms: i64) -> Result<bool, StoreError> {
        let key = self.key("grant", &grant_key(resource, payer));
        let held: i64 = self
            .store
            .eval("sign_in_granted", &GRANTED, vec![key], Vec::new())
            .await?;
        Ok(held == 1)
    }

    async fn use_nonce(&self, nonce: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        let key = self.key("sign-in-nonce", nonce);
        let fresh: i64 = self
            .store
            .eval(
                "sign_in_nonce",
                &USE_NONCE,
                vec![key],
                vec![arg(ttl_ms(until_ms, now_ms))],
            )
            .await?;
        Ok(fresh == 1)
    }
}

/// Grants and nonces in the PostgreSQL ledger (`[journal] url` without `[redis]`): shared by the
/// replicas on that database, and kept across restarts.
pub struct PostgresSignIn {
    pool: deadpool_postgres::Pool,
    runtime: tokio::runtime::Handle,
}

impl PostgresSignIn {
    pub(super) fn new(pool: deadpool_postgres::Pool, runtime: tokio::runtime::Handle) -> Self {
        Self { pool, runtime }
    }
}

#[async_trait]
impl SignInStore for PostgresSignIn {
    async fn grant(&self, resource: &str, payer: &str, until_ms: i64) -> Result<(), StoreError> {
        let pool = self.pool.clone();
        let (key, resource, payer) = (
            grant_key(resource, payer),
            resource.to_string(),
            payer.to_ascii_lowercase(),
        );
        run_on(&self.runtime, async move {
            let client = pool.get().await.map_err(db_error)?;
            // A longer grant already held is kept.
            client
                .execute(
                    "INSERT INTO x402_grants (grant_key, resource, payer, until_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (grant_key) DO UPDATE \
                     SET until_ms = GREATEST(x402_grants.until_ms, EXCLUDED.until_ms)",
                    &[&key, &resource, &payer, &until_ms],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
        .await
    }

    async fn granted(&self, resource: &str, payer: &str, now_ms: i64) -> Result<bool, StoreError> {
        let pool = self.pool.clone();
        let key = grant_key(resource, payer);
        run_on(&self.runtime, async move {
            let client = pool.get().await.map_err(db_error)?;
            let row = client
                .query_opt(
                    "SELECT 1 FROM x402_grants WHERE grant_key = $1 AND until_ms > $2",
                    &[&key, &now_ms],
                )
                .await
                .map_err(db_error)?;
            Ok(row.is_some())
        })
        .await
    }

    async fn use_nonce(&self, nonce: &str, until_ms: i64, now_ms: i64) -> Result<bool, StoreError> {
        let pool = self.pool.clone();
        let nonce = nonce.to_string();
        let until_ms = until_ms.max(now_ms + 1);
        run_on(&self.runtime, async move {
            let client = pool.get().await.map_err(db_error)?;
            // Taken when new, or when the nonce remembered there has expired; one statement, so
            // two replicas cannot both take it.
            let row = client
                .query_opt(
                    "INSERT INTO x402_sign_in_nonces (nonce, until_ms) VALUES ($1, $2) \
                     ON CONFLICT (nonce) DO UPDATE SET until_ms = EXCLUDED.until_ms \
                     WHERE x402_sign_in_nonces.until_ms <= $3 RETURNING 1",
                    &[&nonce, &until_ms, &now_ms],
                )
                .await
                .map_err(db_error)?;
            Ok(row.is_some())
        })
        .await
    }

    async fn grants(&self, now_ms: i64) -> Result<Vec<Grant>, StoreError> {
        let pool = self.pool.clone();
        run_on(&self.runtime, async move {
            let client = pool.get().await.map_err(db_error)?;
            let rows = client
                .query(
                    "SELECT resource, payer, until_ms FROM x402_grants WHERE until_ms > $1",
                    &[&now_ms],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| Grant {
                    resource: row.get(0),
                    payer: row.get(1),
                    until_ms: row.get(2),
                })
                .collect())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_grant_lasts_its_window_and_covers_only_its_resource_and_payer() {
        let store = LocalSignIn::new();
        store
            .grant("GET /report\n/report", "0xAbC", 2_000)
            .await
            .expect("granted");
        assert!(store
            .granted("GET /report\n/report", "0xabc", 1_999)
            .await
            .unwrap());
        assert!(!store
            .granted("GET /report\n/report", "0xabc", 2_000)
            .await
            .unwrap());
        assert!(!store
            .granted("GET /other\n/other", "0xabc", 1_000)
            .await
            .unwrap());
        assert!(!store
            .granted("GET /report\n/report", "0xdef", 1_000)
            .await
            .unwrap());
        // a shorter grant does not cut a longer one
        store
            .grant("GET /report\n/report", "0xabc", 1_500)
            .await
            .unwrap();
        assert!(store
            .granted("GET /report\n/report", "0xabc", 1_900)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_nonce_is_used_once_while_it_is_remembered() {
        let store = LocalSignIn::new();
        assert!(store.use_nonce("n1", 5_000, 1_000).await.unwrap());
        assert!(!store.use_nonce("n1", 5_000, 1_001).await.unwrap());
        assert!(store.use_nonce("n2", 5_000, 1_001).await.unwrap());
        // forgotten once its message is too old to be presented anyway
        assert!(store.use_nonce("n1", 9_000, 5_000).await.unwrap());
    }

    #[tokio::test]
    async fn live_grants_are_listed_with_what_they_cover_and_until_when() {
        let store = LocalSignIn::new();
        store
            .grant("GET /report /report", "0xAbC", 2_000)
            .await
            .expect("grant");
        store
            .grant("GET /daily /daily", "0xdef", 500)
            .await
            .expect("grant");
        // A longer grant of the same wallet and resource replaces the shorter one.
        store
            .grant("GET /report /report", "0xabc", 3_000)
            .await
            .expect("grant");
        let mut listed = store.grants(1_000).await.expect("list");
        listed.sort_by(|a, b| a.resource.cmp(&b.resource));
        assert_eq!(
            listed,
            vec![Grant {
                resource: "GET /report /report".into(),
                payer: "0xabc".into(),
                until_ms: 3_000,
            }],
            "the expired grant is left out"
        );
        assert!(store
            .granted("GET /report /report", "0xABC", 2_999)
            .await
            .expect("granted"));
    }
}
