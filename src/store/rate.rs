//! Rate-limit counters: fixed windows counted per key, in this process or in Redis.

use super::redis::{arg, RedisStore};
use super::StoreError;
use async_trait::async_trait;
use dashmap::DashMap;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

#[async_trait]
pub trait RateCounter: Send + Sync {
    /// Counts one request under `key` (which names its window) and returns the count so far.
    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StoreError>;
    /// Drops counters of windows that ended.
    fn forget_expired(&self) {}
}

/// Counters of one process.
#[derive(Debug, Default)]
pub struct LocalRateCounter {
    counts: DashMap<String, (u64, std::time::Instant)>,
}

impl LocalRateCounter {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RateCounter for LocalRateCounter {
    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let now = std::time::Instant::now();
        let mut entry = self
            .counts
            .entry(key.to_string())
            .or_insert((0, now + window));
        if entry.1 <= now {
            *entry = (0, now + window);
        }
        entry.0 += 1;
        Ok(entry.0)
    }

    fn forget_expired(&self) {
        let now = std::time::Instant::now();
        self.counts.retain(|_, (_, ends)| *ends > now);
    }
}

static HIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = redis.call('INCR', KEYS[1])
          if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
          return n",
    )
});

/// Counters every replica shares.
pub struct RedisRateCounter {
    store: Arc<RedisStore>,
}

impl RedisRateCounter {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl RateCounter for RedisRateCounter {
    async fn hit(&self, key: &str, window: Duration) -> Result<u64, StoreError> {
        let key = self.store.key("rate", key);
        self.store
            .eval(
                "rate_limit",
                &HIT,
                vec![key],
                vec![arg(window.as_millis() as u64)],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_counters_count_per_key_and_restart_with_the_window() {
        let counter = LocalRateCounter::new();
        let window = Duration::from_millis(50);
        assert_eq!(counter.hit("a", window).await.unwrap(), 1);
        assert_eq!(counter.hit("a", window).await.unwrap(), 2);
        assert_eq!(counter.hit("b", window).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(counter.hit("a", window).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
        counter.forget_expired();
        assert!(counter.counts.is_empty());
    }
}
