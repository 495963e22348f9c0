//! Idempotent retries in Redis, so a resend reaching another replica gets the stored response.
//!
//! One key per id holds `{"f": fingerprint}` while in flight and `{"f", "done"}` once completed.
//! Claiming is `SET NX PX` or a read of what holds the key, in one script.

use super::redis::{arg, RedisStore};
use crate::payment::idempotency::{Claim, Completed, IdempotencyStore, IdempotencyUnavailable};
use async_trait::async_trait;
use redis::Script;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// `!new` when claimed, else the value that holds the key (`!gone` if it just expired).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return '!new' end
          return redis.call('GET', KEYS[1]) or '!gone'",
    )
});

/// Replaces the in-flight value `ARGV[1]` with `ARGV[2]` for `ARGV[3]` ms.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) and 1 or 0
          end
          return 0",
    )
});

static ABANDON: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
          return 0",
    )
});

#[derive(Serialize, Deserialize)]
struct Held {
    f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<Completed>,
}

pub(super) fn in_flight(fingerprint: &str) -> String {
    serde_json::json!({ "f": fingerprint }).to_string()
}

pub struct RedisIdempotency {
    store: Arc<RedisStore>,
}

impl RedisIdempotency {
    pub fn new(store: Arc<RedisStore>) -> Self {
        Self { store }
    }

    fn key(&self, id: &str) -> String {
        idempotency_key(&self.store, id)
    }
}

/// The value kept under an identifier once its payment completed.
pub(super) fn completed_value(fingerprint: &str, completed: &Completed) -> Option<String> {
    let done = Held {
        f: fingerprint.to_string(),
        done: Some(completed.clone()),
    };
    serde_json::to_string(&done).ok()
}

pub(super) fn idempotency_key(store: &RedisStore, id: &str) -> String {
    store.key("idem", id)
}

/// What the value `held` under an identifier means for a claim with `fingerprint`.
pub(super) fn read_claim(held: &str, fingerprint: &str) -> Claim {
    match serde_json::from_str::<Held>(held) {
        Ok(held) if held.f != fingerprint => Claim::Mismatch,
        Ok(Held {
            done: Some(done), ..
        }) => Claim::Completed(done),
        Ok(_) => Claim::InFlight,
        // Not ours to interpret: refuse rather than process the payment twice.
        Err(_) => Claim::Mismatch,
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotency {
    async fn claim(
        &self,
        id: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, IdempotencyUnavailable> {
        let args = vec![arg(in_flight(fingerprint)), arg(ttl.as_millis() as u64)];
        let answer: String = self
            .store
            .eval("idempotency_claim", &CLAIM, vec![self.key(id)], args)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "idempotency claim failed");
                IdempotencyUnavailable
            })?;
        Ok(match answer.as_str() {
            "!new" => Claim::New,
            "!gone" => Claim::InFlight,
            held => read_claim(held, fingerprint),
        })
    }

    async fn complete(&self, id: &str, fingerprint: &str, completed: &Completed, ttl: Duration) {
        let Some(done) = completed_value(fingerprint, completed) else {
            return;
        };
        let args = vec![
            arg(in_flight(fingerprint)),
            arg(done),
            arg(ttl.as_millis() as u64),
        ];
        let result: Result<i64, _> = self
            .store
            .eval("idempotency_complete", &COMPLETE, vec![self.key(id)], args)
            .await;
        if let Err(e) = result {
            // The claim stays in flight until it expires: resends get 409, never a second charge.
            tracing::warn!(error = %e, "could not keep the response of an idempotent payment");
        }
    }

    async fn abandon(&self, id: &str, fingerprint: &str) {
        let args = vec![arg(in_flight(fingerprint))];
        let result: Result<i64, _> = self
            .store
            .eval("idempotency_abandon", &ABANDON, vec![self.key(id)], args)
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not give an idempotency claim up");
        }
    }

    async fn forget_expired(&self) -> usize {
        0
    }
}
