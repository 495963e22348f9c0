//! Idempotent retries: x402's `payment-identifier` extension.
//!
//! A payment may carry `extensions["payment-identifier"].info.id`. The id is claimed before the
//! facilitator is asked to verify, bound to a fingerprint of the exact payload and request; while
//! the first request is in flight a resend is refused, and once it was delivered a resend gets the
//! response as first sent (status, headers including `PAYMENT-RESPONSE`, body) without a second
//! charge or upstream call. A different payload under the same id is refused. The store is a
//! trait so that replicas can share it.

use super::lifecycle::Outcome;
use super::refusal::Refusal;
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

/// What a claim of a payment identifier means for its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldClaim {
    /// A fresh claim: the request goes on to its payment.
    Fresh,
    /// The request is refused and counted as `outcome`; nothing is charged.
    Refused { refusal: Refusal, outcome: Outcome },
    /// The response kept from the first delivery, replayed as it was; nothing is charged again.
    Replay {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// The kept response cannot be read: the buyer gets [`lost_response`], not an empty success.
    Unreadable(StoredResponseUnreadable),
}

/// The refusal of a resend whose kept response cannot be read. The payment was charged once
/// already; the buyer is told the kept copy is lost rather than handed an empty success, and is
/// neither charged nor served again. Counted as an error of the gateway.
pub fn lost_response() -> Refusal {
    Refusal::new(
        500,
        "stored_response_unreadable",
        "this payment was delivered once, but the response kept for retries cannot be read; nothing was charged again",
    )
}

/// Decides a request whose payment identifier was claimed with `claim`.
pub fn held_claim(claim: Claim) -> HeldClaim {
    let refuse = |status, code: &str, message: &str, outcome| HeldClaim::Refused {
        refusal: Refusal::new(status, code, message),
        outcome,
    };
    match claim {
        Claim::New => HeldClaim::Fresh,
        Claim::InFlight => refuse(
            409,
            "payment_in_progress",
            "a request with this payment identifier is still being processed; retry later",
            Outcome::Refused,
        ),
        Claim::Mismatch => refuse(
            409,
            "payment_identifier_mismatch",
            "this payment identifier was used with a different payment or request",
            Outcome::Refused,
        ),
        Claim::Completed(Completed::TooLarge { limit }) => refuse(
            409,
            "response_not_kept",
            &format!(
                "this payment was delivered once; its response was larger than {limit} bytes, so it was not kept for retries"
            ),
            Outcome::Refused,
        ),
        Claim::Completed(Completed::Response(stored)) => match stored.body() {
            Ok(body) => HeldClaim::Replay {
                status: stored.status,
                headers: stored.headers,
                body,
            },
            Err(e) => HeldClaim::Unreadable(e),
        },
    }
}

/// The refusal of a payment whose identifier is malformed.
pub fn invalid_identifier(message: &str) -> Refusal {
    Refusal::new(400, "invalid_payment_identifier", message)
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

/// A completed claim whose kept response (200, `paid content`, one receipt header) has `body` in
/// place of its stored body: the kept copy as a store may return it, intact or corrupted.
#[cfg(test)]
pub(crate) fn kept_claim(body: Value) -> Claim {
    let mut kept = serde_json::to_value(StoredResponse::new(
        200,
        vec![("payment-response".into(), "receipt".into())],
        b"paid content",
    ))
    .expect("a stored response serialises");
    kept["body"] = body;
    let stored = serde_json::from_value(kept).expect("the entry parses");
    Claim::Completed(Completed::Response(stored))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use super::kept_claim as kept;

    fn refused_code(held: HeldClaim) -> (String, u16, Outcome) {
        match held {
            HeldClaim::Refused { refusal, outcome } => (refusal.code, refusal.status, outcome),
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_fresh_claim_goes_on_and_held_ones_are_refused_without_a_charge() {
        assert_eq!(held_claim(Claim::New), HeldClaim::Fresh);
        assert_eq!(
            refused_code(held_claim(Claim::InFlight)),
            ("payment_in_progress".into(), 409, Outcome::Refused)
        );
        assert_eq!(
            refused_code(held_claim(Claim::Mismatch)),
            ("payment_identifier_mismatch".into(), 409, Outcome::Refused)
        );
        let too_large = held_claim(Claim::Completed(Completed::TooLarge { limit: 10 }));
        let HeldClaim::Refused { refusal, outcome } = too_large else {
            panic!("a response not kept is refused");
        };
        assert_eq!((refusal.status, outcome), (409, Outcome::Refused));
        assert_eq!(refusal.code, "response_not_kept");
        assert!(refusal.message.contains("10 bytes"), "{}", refusal.message);
        assert_eq!(
            refusal.challenge, None,
            "a held identifier is not asked to pay again"
        );
    }

    #[test]
    fn a_kept_response_is_replayed_as_delivered() {
        let intact = Value::String(STANDARD.encode(b"paid content"));
        assert_eq!(
            held_claim(kept(intact)),
            HeldClaim::Replay {
                status: 200,
                headers: vec![("payment-response".into(), "receipt".into())],
                body: b"paid content".to_vec(),
            }
        );
    }

    #[test]
    fn a_corrupt_kept_response_is_an_error_not_an_empty_success() {
        let corrupt = Value::String("%%% not base64 %%%".into());
        assert!(
            matches!(held_claim(kept(corrupt)), HeldClaim::Unreadable(_)),
            "a corrupt kept response is not replayed"
        );
        let refusal = lost_response();
        assert_eq!(refusal.status, 500);
        assert_eq!(refusal.code, "stored_response_unreadable");
        assert_eq!(
            refusal.receipt, None,
            "no receipt is replayed with the error"
        );
    }

    #[test]
    fn a_malformed_identifier_is_refused_with_its_reason() {
        let refusal = invalid_identifier("too short");
        assert_eq!(
            (refusal.status, refusal.code.as_str()),
            (400, "invalid_payment_identifier")
        );
        assert_eq!(refusal.message, "too short");
    }

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
