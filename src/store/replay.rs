//! Replay reservations in Redis: one authorization buys one request across every replica.
//!
//! A reservation is `SET NX PX` of a random owner token; only its owner releases it
//! (compare-and-delete) or turns it into `settled` / `unknown`, which stay until the
//! authorization expired on chain plus a margin. Each is one script, so one round trip.

use super::redis::{arg, RedisStore};
use crate::payment::{ReplayError, ReplayGuard, ReplayKey};
use async_trait::async_trait;
use dashmap::DashMap;
use redis::Script;
use std::sync::{Arc, LazyLock};

/// Kept past `validBefore` so that replicas whose clocks differ a little still refuse it.
const EXPIRY_MARGIN_SECS: u64 = 60;
const SETTLED: &str = "settled";
const UNKNOWN: &str = "unknown";
const RESERVED_PREFIX: &str = "reserved:";

/// `ok` when reserved, else the value that holds the key.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'ok' end
          return redis.call('GET', KEYS[1]) or 'reserved:'",
    )
});

static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
          return 0",
    )
});

/// Replaces the owner's reservation with a final state; a reservation that vanished is
/// written anyway, because refusing a spent authorization matters more than its owner.
static FINISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local held = redis.call('GET', KEYS[1])
          if held == ARGV[1] or not held then
            redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
            return 1
          end
          return 0",
    )
});

/// Settled authorizations recorded before a restart, in one round trip per batch: each key
/// (`KEYS[i]`, kept `ARGV[i]` ms) that no one holds becomes `settled`.
static REMEMBER_SETTLED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local remembered = 0
          for i, key in ipairs(KEYS) do
            if redis.call('SET', key, 'settled', 'NX', 'PX', ARGV[i]) then remembered = remembered + 1 end
          end
          return remembered",
    )
});

/// Keys per `REMEMBER_SETTLED` call: large enough that a restart with many live authorizations
/// makes few round trips, small enough that no call holds Redis up for long.
const REMEMBER_BATCH: usize = 500;

/// A reservation this process holds: the token proving ownership and when it ends.
struct Held {
    token: String,
    expires_at: u64,
}

pub struct RedisReplayGuard {
    store: Arc<RedisStore>,
    held: DashMap<ReplayKey, Held>,
}

impl RedisReplayGuard {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self {
            store,
            held: DashMap::new(),
        }
    }

    pub(super) fn redis_key(&self, key: &ReplayKey) -> String {
        self.store.key("replay", &key.to_hex())
    }

    /// A fresh owner token and how long its reservation lasts.
    pub(super) fn new_reservation(&self, expires_at: u64, now: u64) -> (String, u64) {
        let token = format!("{RESERVED_PREFIX}{:032x}", rand::random::<u128>());
        (token, ttl_ms(expires_at, now))
    }

    /// Gives up this process's hold of `key` to a write made elsewhere: the owner token (empty
    /// if none is held) and how long a final state lasts.
    pub(super) fn take_held(&self, key: &ReplayKey, expires_at: u64) -> (String, u64) {
        let now = crate::time::unix_now();
        match self.held.remove(key) {
            Some((_, held)) => (held.token, ttl_ms(held.expires_at, now)),
            None => (String::new(), ttl_ms(expires_at, now)),
        }
    }

    /// Remembers a reservation made elsewhere (in one round trip with other claims) as this
    /// process's, so that it releases or finishes it like its own.
    pub(super) fn hold(&self, key: &ReplayKey, token: String, expires_at: u64) {
        self.held.insert(*key, Held { token, expires_at });
    }

    /// Records the final state without holding the response up: until it lands, the
    /// reservation itself keeps the authorization refused, so no replica can use it meanwhile.
    fn finish(&self, key: &ReplayKey, state: &'static str) {
        let Some((_, held)) = self.held.remove(key) else {
            return;
        };
        let ttl_ms = ttl_ms(held.expires_at, crate::time::unix_now());
        let args = vec![arg(held.token.as_str()), arg(state), arg(ttl_ms)];
        let store = self.store.clone();
        let redis_key = self.redis_key(key);
        let shown = key.to_hex();
        self.store.spawn(async move {
            let result: Result<i64, _> = store
                .eval("replay_finish", &FINISH, vec![redis_key], args)
                .await;
            if let Err(e) = result {
                // The reservation stays until it expires: the authorization remains refused.
                tracing::warn!(error = %e, key = %shown, state, "could not record the payment's state in redis");
            }
        });
    }
}

/// Why an authorization whose key holds `held` cannot be reserved.
pub(super) fn held_error(held: &str) -> ReplayError {
    match held {
        UNKNOWN => ReplayError::OutcomeUnknown,
        held if held.starts_with(RESERVED_PREFIX) => ReplayError::InFlight,
        // `settled`, or anything this version does not know: refused, never read as free.
        _ => ReplayError::AlreadySettled,
    }
}

fn ttl_ms(expires_at: u64, now: u64) -> u64 {
    (expires_at.saturating_sub(now) + EXPIRY_MARGIN_SECS) * 1000
}

#[async_trait]
impl ReplayGuard for RedisReplayGuard {
    async fn reserve(&self, key: &ReplayKey, expires_at: u64, now: u64) -> Result<(), ReplayError> {
        let (token, ttl_ms) = self.new_reservation(expires_at, now);
        let args = vec![arg(token.as_str()), arg(ttl_ms)];
        let answer: String = self
            .store
            .eval("replay_reserve", &RESERVE, vec![self.redis_key(key)], args)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "replay reservation failed");
                ReplayError::Unavailable
            })?;
        match answer.as_str() {
            "ok" => {
                self.hold(key, token, expires_at);
                Ok(())
            }
            held => Err(held_error(held)),
        }
    }

    async fn release(&self, key: &ReplayKey) {
        let Some((_, held)) = self.held.remove(key) else {
            return;
        };
        let result: Result<i64, _> = self
            .store
            .eval(
                "replay_release",
                &RELEASE,
                vec![self.redis_key(key)],
                vec![arg(held.token.as_str())],
            )
            .await;
        if let Err(e) = result {
            // Fail closed: the authorization stays refused until it expires rather than risk a
            // second use while Redis is unsure.
            tracing::warn!(error = %e, key = %key.to_hex(), "could not release a reservation in redis");
        }
    }

    async fn mark_settled(&self, key: &ReplayKey) {
        self.finish(key, SETTLED);
    }

    async fn keep_unknown(&self, key: &ReplayKey) {
        self.finish(key, UNKNOWN);
    }

    async fn remember_settled(&self, recorded: &[(ReplayKey, u64)], now: u64) -> usize {
        let mut remembered = 0;
        for batch in recorded.chunks(REMEMBER_BATCH) {
            let keys = batch.iter().map(|(key, _)| self.redis_key(key)).collect();
            let args = batch
                .iter()
                .map(|(_, expires_at)| arg(ttl_ms(*expires_at, now)))
                .collect();
            match self
                .store
                .eval::<i64>("replay_remember", &REMEMBER_SETTLED, keys, args)
                .await
            {
                Ok(n) => remembered += usize::try_from(n).unwrap_or(0),
                // As when a single reservation fails at start-up: the journal still refuses these
                // authorizations where it is shared (PostgreSQL); the log says what was not kept.
                Err(e) => {
                    tracing::warn!(error = %e, authorizations = batch.len(), "could not remember settled authorizations in redis")
                }
            }
        }
        remembered
    }

    async fn forget_expired(&self, now: u64) -> usize {
        // Redis expires the keys itself; only reservations this process lost track of remain.
        let before = self.held.len();
        self.held
            .retain(|_, h| h.expires_at + EXPIRY_MARGIN_SECS > now);
        before.saturating_sub(self.held.len())
    }

    fn len(&self) -> usize {
        self.held.len()
    }
}
