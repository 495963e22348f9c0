//! One Redis connection shared by every request of the process, multiplexed and reconnecting.
//!
//! The client runs on a runtime of its own thread: Pingora gives each service its own runtime,
//! and a connection's background tasks must live on one that lasts as long as the process.
//! Every call is bounded by `[redis] timeout`; a call that does not answer in time marks the store
//! unreachable, and the next one that does marks it reachable again, so Redis coming back heals
//! without a restart.

use super::StoreHealth;
use crate::config::RedisConfig;
use crate::metrics::Metrics;
use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Script, ToRedisArgs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::runtime::Handle;

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
}

/// A connected (or reconnecting) Redis, shared by the stores of one process.
pub struct RedisStore {
    connection: ConnectionManager,
    runtime: Handle,
    prefix: String,
    timeout: Duration,
    shown_url: String,
    reachable: AtomicBool,
    /// Dropping it ends the client's thread.
    _stop: tokio::sync::oneshot::Sender<()>,
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
    /// priced routes answer 503 until it comes up, like one that goes down later.
    pub fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let client = redis::Client::open(config.url.expose())?;
        let (runtime, stop) = spawn_runtime()?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(config.timeout);
        let connection = {
            let _inside = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, manager_config)?
        };
        Ok(Self {
            connection,
            runtime,
            prefix: config.key_prefix.clone(),
            timeout: config.timeout,
            shown_url: config.display_url(),
            reachable: AtomicBool::new(false),
            _stop: stop,
        })
    }

    /// `prefix` + `kind` + `:` + `id`.
    pub fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `work` on the client's own runtime, which outlives any caller's.
    pub fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        drop(self.runtime.spawn(work));
    }

    /// Runs `script` with `keys` and `args` in one round trip (EVALSHA, loading it once).
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
        let mut connection = self.connection.clone();
        let call = self.runtime.spawn(async move {
            let mut invocation = script.prepare_invoke();
            for key in &keys {
                invocation.key(key);
            }
            for arg in &args {
                invocation.arg(arg.as_slice());
            }
            invocation.invoke_async::<T>(&mut connection).await
        });
        let result = match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(join)) => Err(StoreError::Start(join.to_string())),
            Ok(Ok(answer)) => answer.map_err(StoreError::from),
        };
        self.observe(operation, result.is_ok());
        result
    }

    /// Asks Redis for `PING`; updates reachability.
    pub async fn ping(&self) -> bool {
        let mut connection = self.connection.clone();
        let call = self.runtime.spawn(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        });
        let ok = matches!(
            tokio::time::timeout(self.timeout, call).await,
            Ok(Ok(Ok(_)))
        );
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

/// A single-threaded runtime on a thread of its own, until the returned sender is dropped.
fn spawn_runtime() -> Result<(Handle, tokio::sync::oneshot::Sender<()>), StoreError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (handle_sender, handle_receiver) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("redis".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = handle_sender.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = handle_sender.send(Ok(runtime.handle().clone()));
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })
        .map_err(|e| StoreError::Start(e.to_string()))?;
    let handle = handle_receiver
        .recv()
        .map_err(|e| StoreError::Start(e.to_string()))?
        .map_err(StoreError::Start)?;
    Ok((handle, stop))
}

/// Arguments as Redis sees them.
pub fn arg(value: impl ToRedisArgs) -> Vec<u8> {
    let mut out = value.to_redis_args();
    out.pop().unwrap_or_default()
}
