//! Redis shared by every request of the process: one multiplexed, reconnecting connection per
//! Tokio runtime that uses it.
//!
//! Pingora runs each service on a runtime of its own, and a `ConnectionManager`'s background
//! tasks live on the runtime that created it: a connection made on one runtime and used from
//! another would stop working when its runtime ends, and every call would hop threads. So each
//! runtime gets its own connection, made on its first call, and a request's Redis calls run on the
//! request's own runtime, one round trip each. A connection whose runtime has ended is dropped and
//! made afresh if a later runtime reuses the id.
//!
//! Every call is bounded by `[redis] timeout`; a call that does not answer in time marks the store
//! unreachable, and the next one that does marks it reachable again, so Redis coming back heals
//! without a restart.

use super::StoreHealth;
use crate::config::RedisConfig;
use crate::metrics::Metrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ToRedisArgs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio::runtime::{Handle, Id};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot start the redis client: {0}")]
    Start(String),
    #[error("redis did not answer lately; not asked")]
    Skipped,
    #[error("database: {0}")]
    Database(String),
    #[error("stored data is not what this gateway writes: {0}")]
    Corrupt(String),
}

/// A connected (or reconnecting) Redis, shared by the stores of one process.
pub struct RedisStore {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    /// One connection per runtime that has called; a handful (Pingora's services, start-up).
    connections: RwLock<Vec<RuntimeConnection>>,
    /// Writes started by [`RedisStore::spawn`] that have not ended yet.
    detached: Arc<Detached>,
    prefix: String,
    timeout: Duration,
    shown_url: String,
    reachable: AtomicBool,
}

/// The connection made on one runtime.
struct RuntimeConnection {
    runtime: Id,
    /// Cleared when the runtime ends (it drops the task holding a [`RuntimeAlive`]): runtime ids
    /// are unique only among running runtimes.
    alive: Arc<AtomicBool>,
    connection: ConnectionManager,
}

/// Held by a task that never ends, so that it is dropped exactly when its runtime shuts down.
struct RuntimeAlive(Arc<AtomicBool>);

impl Drop for RuntimeAlive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// A count of detached writes, and a wake-up for whoever waits for them to end.
#[derive(Default)]
struct Detached {
    running: AtomicUsize,
    idle: Notify,
}

/// Counts one detached write for as long as it lives, however it ends.
struct DetachedWrite(Arc<Detached>);

impl Drop for DetachedWrite {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets the client up without waiting for Redis: a Redis that is down at start-up makes
    /// priced routes answer 503 until it comes up, like one that goes down later. Connections are
    /// made by the first call on each runtime.
    pub fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.expose())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        Ok(Self {
            client,
            manager_config,
            connections: RwLock::new(Vec::new()),
            detached: Arc::default(),
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            shown_url: config.display_url(),
            reachable: AtomicBool::new(false),
        })
    }

    /// `prefix` + `kind` + `:` + `id`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `work` on the caller's runtime without waiting for it; [`RedisStore::detached_done`]
    /// waits for it. Called outside a runtime, `work` is dropped (with a warning): every caller
    /// is a request or start-up task, which always has one.
    pub fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let Ok(runtime) = Handle::try_current() else {
            tracing::warn!(redis = %self.shown_url, "a redis write was started outside a runtime and dropped");
            return;
        };
        self.detached.running.fetch_add(1, Ordering::AcqRel);
        let counted = DetachedWrite(self.detached.clone());
        drop(runtime.spawn(async move {
            let _counted = counted;
            work.await;
        }));
    }

    /// Waits until every write started by [`RedisStore::spawn`] has ended. A runtime that is about
    /// to end (the one that replays the journal at start-up) calls it so that its writes land.
    pub async fn detached_done(&self) {
        loop {
            let idle = self.detached.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.detached.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// The connection of the caller's runtime, made on its first call there.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let runtime = Handle::try_current()
            .map_err(|e| StoreError::Start(e.to_string()))?
            .id();
        let live = |c: &&RuntimeConnection| c.runtime == runtime && c.alive.load(Ordering::Acquire);
        // A poisoned lock still holds a consistent list: it is only pushed to and filtered.
        if let Some(known) = self
            .connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(live)
        {
            return Ok(known.connection.clone());
        }
        let mut connections = self
            .connections
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(known) = connections.iter().find(live) {
            return Ok(known.connection.clone());
        }
        connections.retain(|c| c.alive.load(Ordering::Acquire));
        let connection = ConnectionManager::new_lazy_with_config(
            self.client.clone(),
            self.manager_config.clone(),
        )?;
        let alive = Arc::new(AtomicBool::new(true));
        let marker = RuntimeAlive(alive.clone());
        drop(tokio::spawn(async move {
            let _marker = marker;
            std::future::pending::<()>().await;
        }));
        connections.push(RuntimeConnection {
            runtime,
            alive,
            connection: connection.clone(),
        });
        Ok(connection)
    }

    /// Number of runtimes with a connection of their own that are still running.
    pub fn runtimes_connected(&self) -> usize {
        self.connections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.alive.load(Ordering::Acquire))
            .count()
    }

    /// Runs `script` with `keys` and `args` in one round trip (EVALSHA, loading it once), on the
    /// caller's runtime.
    pub async fn eval<T>(
        &self,
        operation: &'static str,
        script: &'static Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    ) -> Result<T, StoreError>
    where
        T: FromRedisValue + Send + 'static,
    {
        let result = match self.connection() {
            Err(e) => Err(e),
            Ok(mut connection) => {
                let mut invocation = script.prepare_invoke();
                for key in &keys {
                    invocation.key(key);
                }
                for arg in &args {
                    invocation.arg(arg.as_slice());
                }
                match tokio::time::timeout(
                    self.timeout,
                    invocation.invoke_async::<T>(&mut connection),
                )
                .await
                {
                    Err(_) => Err(StoreError::Timeout(self.timeout)),
                    Ok(answer) => answer.map_err(StoreError::from),
                }
            }
        };
        self.observe(operation, result.is_ok());
        result
    }

    /// Asks Redis for `PING`; updates reachability.
    pub async fn ping(&self) -> bool {
        let ok = match self.connection() {
            Err(_) => false,
            Ok(mut connection) => matches!(
                tokio::time::timeout(
                    self.timeout,
                    redis::cmd("PING").query_async::<String>(&mut connection),
                )
                .await,
                Ok(Ok(_))
            ),
        };
        self.observe("ping", ok);
        ok
    }

    fn observe(&self, operation: &'static str, ok: bool) {
        let was = self.reachable.swap(ok, Ordering::AcqRel);
        let metrics = Metrics::global();
        metrics.shared_store_up.set(i64::from(ok));
        if !ok {
            metrics
                .shared_store_unavailable
                .with_label_values(&[operation])
                .inc();
        }
        if was != ok {
            if ok {
                tracing::info!(redis = %self.shown_url, "redis answers again");
            } else {
                tracing::error!(redis = %self.shown_url, operation, "redis does not answer: priced routes answer 503");
            }
        }
    }
}

impl StoreHealth for RedisStore {
    fn describe(&self) -> String {
        self.shown_url.clone()
    }

    fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }
}

/// Arguments as Redis sees them.
pub fn arg(value: impl ToRedisArgs) -> Vec<u8> {
    let mut out = value.to_redis_args();
    out.pop().unwrap_or_default()
}
