//! Admission claims: everything a paid request claims in shared state before the facilitator is
//! asked anything (rate-limit counters, the payment identifier, the replay reservation), asked of
//! one store in one go so that a shared store answers it in a single round trip.
//!
//! The order is the one a single process would follow: a held identifier answers first (a resend
//! gets its stored response without being counted); then the counters are counted, and an exceeded
//! limit claims nothing else; then the authorization is reserved, and a refused one claims no
//! identifier. Only when all of them pass is anything kept.

use super::idempotency::{Claim, Completed};
use super::replay::{ReplayError, ReplayKey};
use async_trait::async_trait;
use std::time::Duration;

/// One rate limit's counter for this request: its key names the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateClaim {
    pub key: String,
    pub window: Duration,
    /// Requests allowed in the window.
    pub limit: u64,
}

/// A payment identifier claimed for one exact payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifierClaim {
    pub id: String,
    pub fingerprint: String,
    pub ttl: Duration,
}

/// What one paid request claims.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    pub rates: &'a [RateClaim],
    pub identifier: Option<&'a IdentifierClaim>,
    pub replay: &'a ReplayKey,
    /// The authorization's `validBefore` (unix seconds).
    pub expires_at: u64,
    pub now: u64,
}

/// The store's answer, for the request path to turn into a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Every counter under its limit; the identifier (if any) and the authorization are claimed.
    Claimed,
    /// The identifier is held (in flight, completed, or for another payload): nothing counted.
    Identifier(Claim),
    /// The limit at this index of [`Claims::rates`] was exceeded: nothing claimed.
    RateLimited { index: usize },
    /// The authorization is held or used: nothing claimed. Never [`ReplayError::Unavailable`].
    Replay(ReplayError),
}

impl Admission {
    /// Reads the counts of [`Claims::rates`], in order: the first exceeded limit, if any.
    pub fn exceeded(rates: &[RateClaim], counts: &[u64]) -> Option<usize> {
        rates
            .iter()
            .zip(counts)
            .position(|(rate, count)| *count > rate.limit)
    }
}

/// The response of a settled payment, kept under its identifier for resends.
#[derive(Debug, Clone, Copy)]
pub struct Delivered<'a> {
    pub id: &'a str,
    pub fingerprint: &'a str,
    pub completed: &'a Completed,
    pub ttl: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the replay store cannot be reached; nothing was charged")]
pub struct AdmissionUnavailable;

#[async_trait]
pub trait AdmissionStore: Send + Sync {
    /// Claims everything `claims` names, all or nothing.
    async fn admit(&self, claims: &Claims<'_>) -> Result<Admission, AdmissionUnavailable>;
    /// Once a payment with an identifier settled and its request ended: the authorization kept
    /// as settled and, when it was delivered whole, the response kept, in one exchange. A write
    /// that fails leaves the reservation and the in-flight claim until they expire: resends and
    /// replays are refused, never charged twice.
    /// `expires_at` is the authorization's `validBefore`.
    async fn finish_settled(
        &self,
        replay: &ReplayKey,
        expires_at: u64,
        delivered: Option<Delivered<'_>>,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_exceeded_limit_is_named() {
        let rate = |limit| RateClaim {
            key: "k".into(),
            window: Duration::from_secs(1),
            limit,
        };
        let rates = [rate(5), rate(2), rate(1)];
        assert_eq!(Admission::exceeded(&rates, &[5, 2, 1]), None);
        assert_eq!(Admission::exceeded(&rates, &[5, 3, 2]), Some(1));
        assert_eq!(Admission::exceeded(&rates, &[6, 3, 2]), Some(0));
    }
}
