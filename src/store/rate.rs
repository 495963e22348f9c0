//! Rate-limit counters: fixed windows counted per key, in this process or in Redis.

use super::redis::{arg, RedisStore};
use super::{StoreError, StoreHealth};
use async_trait::async_trait;
use dashmap::DashMap;
use redis::Script;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

#[async_trait]
pub trait RateCounter: Send + Sync {
    /// Counts one request under each key (which names its window, of the given length) and
    /// returns the counts so far, in order: one round trip for every limit of a request.
    async fn hit_all(&self, keys: &[(String, Duration)]) -> Result<Vec<u64>, StoreError>;
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
    async fn hit_all(&self, keys: &[(String, Duration)]) -> Result<Vec<u64>, StoreError> {
        let now = std::time::Instant::now();
        let counts = keys
            .iter()
            .map(|(key, window)| {
                let mut entry = self.counts.entry(key.clone()).or_insert((0, now + *window));
                if entry.1 <= now {
                    *entry = (0, now + *window);
                }
                entry.0 += 1;
                entry.0
            })
            .collect();
        Ok(counts)
    }

    fn forget_expired(&self) {
        let now = std::time::Instant::now();
        self.counts.retain(|_, (_, ends)| *ends > now);
    }
}

static HIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local counts = {}
          for i, key in ipairs(KEYS) do
            local n = redis.call('INCR', key)
            if n == 1 then redis.call('PEXPIRE', key, ARGV[i]) end
            counts[i] = n
          end
          return counts",
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
    async fn hit_all(&self, keys: &[(String, Duration)]) -> Result<Vec<u64>, StoreError> {
        // During an outage challenges are not held up by a timeout per request; the probe
        // notices Redis coming back.
        if !self.store.reachable() {
            return Err(StoreError::Skipped);
        }
        let (names, windows) = keys
            .iter()
            .map(|(key, window)| (self.store.key("rate", key), arg(window.as_millis() as u64)))
            .unzip();
        self.store.eval("rate_limit", &HIT, names, windows).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_counters_count_per_key_and_restart_with_the_window() {
        let counter = LocalRateCounter::new();
        let window = Duration::from_millis(50);
        let keys = |names: &[&str]| -> Vec<(String, Duration)> {
            names.iter().map(|n| (n.to_string(), window)).collect()
        };
        assert_eq!(counter.hit_all(&keys(&["a"])).await.unwrap(), vec![1]);
        assert_eq!(
            counter.hit_all(&keys(&["a", "b"])).await.unwrap(),
            vec![2, 1]
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(counter.hit_all(&keys(&["a"])).await.unwrap(), vec![1]);
        tokio::time::sleep(Duration::from_millis(60)).await;
        counter.forget_expired();
        assert!(counter.counts.is_empty());
    }
}
