//! Idempotent retries: x402's `payment-identifier` extension.
//!
//! A payment may carry `extensions["payment-identifier"].info.id`. The id is claimed before the
//! facilitator is asked to verify, bound to a fingerprint of the exact payload and request; while
//! the first request is in flight a resend is refused, and once it was delivered a resend gets the
//! response as first sent (status, headers including `PAYMENT-RESPONSE`, body) without a second
//! charge or upstream call. A different payload under the same id is refused. The store is a
//! trait so that replicas can share it.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;

pub const PAYMENT_IDENTIFIER: &str = "payment-identifier";

/// The extension's id, when the payload carries one. Ids are 16–128 characters of
/// `[A-Za-z0-9_-]`; anything else is refused rather than ignored, so that a client never
/// believes a malformed id protects its retries.
pub fn payment_identifier(payload: &Value) -> Result<Option<String>, String> {
    let Some(extension) = payload
        .get("extensions")
        .and_then(|e| e.get(PAYMENT_IDENTIFIER))
    else {
        return Ok(None);
    };
    // Clients echo the advertised extension as they received it; without an id it asks nothing.
    let Some(id) = extension.get("info").and_then(|i| i.get("id")) else {
        return Ok(None);
    };
    let id = id
        .as_str()
        .ok_or("payment-identifier info.id must be a string")?;
    let well_formed = (16..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !well_formed {
        return Err(
            "payment-identifier info.id must be 16 to 128 characters of A-Z, a-z, 0-9, _ and -"
                .into(),
        );
    }
    Ok(Some(id.to_string()))
}

/// What a resend must match: the method, the request target and the exact payload (keys sorted).
pub fn fingerprint(method: &str, target: &str, payload: &Value) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update(b"\n");
    hasher.update(target.as_bytes());
    hasher.update(b"\n");
    hasher.update(payload.to_string().as_bytes());
    alloy_primitives::hex::encode(hasher.finalize())
}

/// A response as first delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Base64 of the body.
    body: String,
}

impl StoredResponse {
    pub fn new(status: u16, headers: Vec<(String, String)>, body: &[u8]) -> Self {
        Self {
            status,
            headers,
            body: STANDARD.encode(body),
        }
    }

    /// The body as first delivered. A kept body that does not decode (a corrupted or tampered
    /// store entry) is an error, never an empty body: replaying it as an empty success would
    /// tell the buyer the paid content was nothing.
    pub fn body(&self) -> Result<Vec<u8>, StoredResponseUnreadable> {
        STANDARD
            .decode(&self.body)
            .map_err(|e| StoredResponseUnreadable(e.to_string()))
    }
}

/// A kept response whose body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the kept response's body cannot be decoded: {0}")]
pub struct StoredResponseUnreadable(String);

/// What was kept of a completed payment's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kept", rename_all = "snake_case")]
pub enum Completed {
    Response(StoredResponse),
    /// Delivered once, but larger than the configured limit, so not kept.
    TooLarge {
        limit: usize,
    },
}

/// The answer to a claim of an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use: the request goes on.
    New,
    /// The same payload is being processed right now.
    InFlight,
    /// The same payload completed earlier.
    Completed(Completed),
    /// The id was used with another payload or request.
    Mismatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the idempotency store cannot be reached")]
pub struct IdempotencyUnavailable;

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `id` for `fingerprint` for `ttl`, or says what holds it.
    async fn claim(
        &self,
        id: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, IdempotencyUnavailable>;
    /// Keeps what a delivered payment's response was, for `ttl`.
    async fn complete(&self, id: &str, fingerprint: &str, completed: &Completed, ttl: Duration);
    /// Gives an in-flight claim up: nothing was charged, the buyer may retry.
    async fn abandon(&self, id: &str, fingerprint: &str);
    /// Drops expired entries; returns how many.
    async fn forget_expired(&self) -> usize;
}

#[derive(Debug)]
struct Kept {
    fingerprint: String,
    completed: Option<Completed>,
    expires: std::time::Instant,
}

/// One process's ids, on a sharded concurrent map.
#[derive(Debug, Default)]
pub struct InMemoryIdempotency {
    entries: DashMap<String, Kept>,
}

impl InMemoryIdempotency {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl IdempotencyStore for InMemoryIdempotency {
    async fn claim(
        &self,
        id: &str,
        fingerprint: &str,
        ttl: Duration,
    ) -> Result<Claim, IdempotencyUnavailable> {
        let now = std::time::Instant::now();
        let fresh = || Kept {
            fingerprint: fingerprint.to_string(),
            completed: None,
            expires: now + ttl,
        };
        Ok(match self.entries.entry(id.to_string()) {
            Entry::Vacant(vacant) => {
                vacant.insert(fresh());
                Claim::New
            }
            Entry::Occupied(mut occupied) => {
                let held = occupied.get();
                if held.expires <= now {
                    occupied.insert(fresh());
                    Claim::New
                } else if held.fingerprint != fingerprint {
                    Claim::Mismatch
                } else {
                    match &held.completed {
                        None => Claim::InFlight,
                        Some(completed) => Claim::Completed(completed.clone()),
                    }
                }
            }
        })
    }

    async fn complete(&self, id: &str, fingerprint: &str, completed: &Completed, ttl: Duration) {
        if let Some(mut entry) = self.entries.get_mut(id) {
            if entry.fingerprint == fingerprint {
                entry.completed = Some(completed.clone());
                entry.expires = std::time::Instant::now() + ttl;
            }
        }
    }

    async fn abandon(&self, id: &str, fingerprint: &str) {
        self.entries.remove_if(id, |_, e| {
            e.fingerprint == fingerprint && e.completed.is_none()
        });
    }

    async fn forget_expired(&self) -> usize {
        let now = std::time::Instant::now();
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires > now);
        before.saturating_sub(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn ids_are_read_and_checked() {
        assert_eq!(payment_identifier(&json!({"x402Version": 2})), Ok(None));
        let echoed = json!({"extensions": {"payment-identifier": {"info": {"required": false}}}});
        assert_eq!(
            payment_identifier(&echoed),
            Ok(None),
            "the advertisement echoed back"
        );
        let id = "pay_0123456789abcdef";
        let payload = json!({"extensions": {"payment-identifier": {"info": {"id": id}}}});
        assert_eq!(payment_identifier(&payload), Ok(Some(id.to_string())));
        for bad in [
            json!("short"),
            json!("x".repeat(129)),
            json!("pay_0123456789abc/ef"),
            json!(7),
        ] {
            let payload = json!({"extensions": {"payment-identifier": {"info": {"id": bad}}}});
            assert!(payment_identifier(&payload).is_err(), "{payload}");
        }
    }

    #[test]
    fn the_fingerprint_binds_request_and_payload() {
        let a = fingerprint("GET", "http://h/a", &json!({"p": 1, "q": 2}));
        assert_eq!(
            a,
            fingerprint("GET", "http://h/a", &json!({"q": 2, "p": 1}))
        );
        assert_ne!(
            a,
            fingerprint("GET", "http://h/b", &json!({"p": 1, "q": 2}))
        );
        assert_ne!(
            a,
            fingerprint("POST", "http://h/a", &json!({"p": 1, "q": 2}))
        );
        assert_ne!(
            a,
            fingerprint("GET", "http://h/a", &json!({"p": 1, "q": 3}))
        );
    }

    #[tokio::test]
    async fn a_claim_goes_in_flight_then_completed() {
        let store = InMemoryIdempotency::new();
        assert_eq!(store.claim("id", "f", TTL).await, Ok(Claim::New));
        assert_eq!(store.claim("id", "f", TTL).await, Ok(Claim::InFlight));
        assert_eq!(store.claim("id", "g", TTL).await, Ok(Claim::Mismatch));
        let response = Completed::Response(StoredResponse::new(
            200,
            vec![("payment-response".into(), "abc".into())],
            b"body",
        ));
        store.complete("id", "f", &response, TTL).await;
        store.abandon("id", "f").await;
        match store.claim("id", "f", TTL).await {
            Ok(Claim::Completed(Completed::Response(r))) => {
                assert_eq!(r.status, 200);
                assert_eq!(r.body().as_deref(), Ok(&b"body"[..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(store.claim("id", "g", TTL).await, Ok(Claim::Mismatch));
    }

    #[test]
    fn a_corrupt_kept_body_is_an_error_not_an_empty_body() {
        let kept = serde_json::to_value(StoredResponse::new(200, vec![], b"paid content"))
            .expect("a stored response serialises");
        let mut corrupt = kept.clone();
        corrupt["body"] = json!("not base64 at all!");
        let corrupt: StoredResponse =
            serde_json::from_value(corrupt).expect("the entry still parses");
        assert!(corrupt.body().is_err(), "{corrupt:?}");
        let intact: StoredResponse = serde_json::from_value(kept).expect("the entry parses");
        assert_eq!(intact.body().as_deref(), Ok(&b"paid content"[..]));
        // An empty body that was kept empty is still a body.
        assert_eq!(StoredResponse::new(204, vec![], b"").body(), Ok(Vec::new()));
    }

    #[tokio::test]
    async fn an_abandoned_claim_can_be_made_again_and_entries_expire() {
        let store = InMemoryIdempotency::new();
        assert_eq!(store.claim("id", "f", TTL).await, Ok(Claim::New));
        store.abandon("id", "g").await;
        assert_eq!(store.claim("id", "f", TTL).await, Ok(Claim::InFlight));
        store.abandon("id", "f").await;
        assert_eq!(store.claim("id", "f", Duration::ZERO).await, Ok(Claim::New));
        assert_eq!(store.forget_expired().await, 1);
        assert_eq!(store.claim("id", "f", TTL).await, Ok(Claim::New));
    }
}
