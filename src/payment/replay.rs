//! The replay guard: one authorization (network, asset, payer, nonce) buys one request.
//!
//! A key is reserved before the facilitator is asked to verify, so concurrent copies of a payment
//! cannot all pass; it is released when the request ends unsettled (the buyer may retry with the same
//! authorization), kept once settled, kept as a tombstone when the settlement's outcome is unknown,
//! and forgotten after `validBefore`, when no chain would accept the authorization any more. The trait is async so a shared store can stand in for the in-memory one.

use async_trait::async_trait;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

/// Identity of an authorization: the Keccak-256 of lower-cased `network|asset|from|nonce`.
/// A fixed 32-byte digest keeps a million remembered authorizations in tens of megabytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplayKey([u8; 32]);

impl ReplayKey {
    pub fn new(network: &str, asset: &str, from: &str, nonce: &str) -> Self {
        let identity = format!("{network}|{asset}|{from}|{nonce}").to_ascii_lowercase();
        Self(alloy_primitives::keccak256(identity.as_bytes()).0)
    }

    /// A key as recorded earlier by [`ReplayKey::to_hex`] (the journal keeps it across
    /// restarts); any other text is read as an identity `network|asset|from|nonce`.
    pub fn from_recorded(text: &str) -> Self {
        let mut digest = [0u8; 32];
        match alloy_primitives::hex::decode_to_slice(text, &mut digest) {
            Ok(()) if text.len() == 64 => Self(digest),
            _ => Self(alloy_primitives::keccak256(text.to_ascii_lowercase().as_bytes()).0),
        }
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        alloy_primitives::hex::encode(self.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum ReplayError {
    #[error("this payment authorization is already being used by another request")]
    InFlight,
    #[error("this payment authorization has already been used")]
    AlreadySettled,
    /// A tombstone: its settlement may have moved money; refused like a settled one.
    #[error(
        "this payment authorization has already been used; its settlement is not confirmed yet"
    )]
    OutcomeUnknown,
    /// A shared store did not answer: nobody can tell whether the authorization is free.
    #[error("the replay store cannot be reached; nothing was charged")]
    Unavailable,
}

#[async_trait]
pub trait ReplayGuard: Send + Sync {
    /// Claims `key` until `expires_at` (unix seconds), or says why it cannot be claimed.
    async fn reserve(&self, key: &ReplayKey, expires_at: u64, now: u64) -> Result<(), ReplayError>;
    /// Gives up a reservation that did not lead to a settlement.
    async fn release(&self, key: &ReplayKey);
    /// Records that `key` was settled: it stays refused until it expires.
    async fn mark_settled(&self, key: &ReplayKey);
    /// Records that `key` may have been settled (the outcome is unknown): a tombstone that
    /// stays refused until it expires, like a settlement, and is never released.
    async fn keep_unknown(&self, key: &ReplayKey);
    /// Drops entries whose authorization expired; returns how many were dropped.
    async fn forget_expired(&self, now: u64) -> usize;
    /// Number of remembered authorizations.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Reserved,
    Settled,
    Unknown,
}

#[derive(Debug)]
struct Remembered {
    state: State,
    expires_at: u64,
}

/// Process-local guard on a sharded concurrent map.
#[derive(Debug, Default)]
pub struct InMemoryReplayGuard {
    entries: DashMap<ReplayKey, Remembered>,
}

impl InMemoryReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ReplayGuard for InMemoryReplayGuard {
    async fn reserve(&self, key: &ReplayKey, expires_at: u64, now: u64) -> Result<(), ReplayError> {
        match self.entries.entry(*key) {
            Entry::Occupied(mut occupied) => {
                let existing = occupied.get();
                if existing.expires_at > now {
                    return Err(match existing.state {
                        State::Reserved => ReplayError::InFlight,
                        State::Settled => ReplayError::AlreadySettled,
                        State::Unknown => ReplayError::OutcomeUnknown,
                    });
                }
                occupied.insert(Remembered {
                    state: State::Reserved,
                    expires_at,
                });
                Ok(())
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Remembered {
                    state: State::Reserved,
                    expires_at,
                });
                Ok(())
            }
        }
    }

    async fn release(&self, key: &ReplayKey) {
        self.entries
            .remove_if(key, |_, e| e.state == State::Reserved);
    }

    async fn mark_settled(&self, key: &ReplayKey) {
        if let Some(mut entry) = self.entries.get_mut(key) {
            entry.state = State::Settled;
        }
    }

    async fn keep_unknown(&self, key: &ReplayKey) {
        if let Some(mut entry) = self.entries.get_mut(key) {
            entry.state = State::Unknown;
        }
    }

    async fn forget_expired(&self, now: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires_at > now);
        before.saturating_sub(self.entries.len())
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ReplayKey {
        ReplayKey::new("eip155:84532", "0xAsset", "0xFrom", &format!("0x{n:02}"))
    }

    #[tokio::test]
    async fn a_reserved_key_is_refused_until_released() {
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(1), 100, 10).await.unwrap();
        assert_eq!(
            guard.reserve(&key(1), 100, 10).await,
            Err(ReplayError::InFlight)
        );
        guard.release(&key(1)).await;
        guard.reserve(&key(1), 100, 10).await.unwrap();
    }

    #[tokio::test]
    async fn a_settled_key_is_refused_until_it_expires() {
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(2), 100, 10).await.unwrap();
        guard.mark_settled(&key(2)).await;
        guard.release(&key(2)).await;
        assert_eq!(
            guard.reserve(&key(2), 100, 50).await,
            Err(ReplayError::AlreadySettled)
        );
        assert_eq!(guard.forget_expired(99).await, 0);
        assert_eq!(guard.forget_expired(100).await, 1);
        assert!(guard.is_empty());
        guard.reserve(&key(2), 200, 150).await.unwrap();
    }

    #[tokio::test]
    async fn an_unknown_outcome_keeps_a_tombstone_until_it_expires() {
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(5), 100, 10).await.unwrap();
        guard.keep_unknown(&key(5)).await;
        guard.release(&key(5)).await;
        assert_eq!(
            guard.reserve(&key(5), 100, 50).await,
            Err(ReplayError::OutcomeUnknown),
            "a tombstone is neither released nor read as free"
        );
        guard.mark_settled(&key(5)).await;
        assert_eq!(
            guard.reserve(&key(5), 100, 50).await,
            Err(ReplayError::AlreadySettled),
            "reconciliation may turn it into a settlement"
        );
        assert_eq!(guard.forget_expired(100).await, 1);
        guard.reserve(&key(5), 200, 150).await.unwrap();
    }

    #[test]
    fn recorded_keys_read_back_as_the_same_key() {
        let k = key(9);
        assert_eq!(ReplayKey::from_recorded(&k.to_hex()), k);
        assert_eq!(
            ReplayKey::from_recorded("EIP155:84532|0xAsset|0xFrom|0x09"),
            k,
            "an identity is hashed like a new key"
        );
    }

    #[tokio::test]
    async fn keys_differ_by_case_insensitive_identity() {
        assert_eq!(
            ReplayKey::new("N", "0xA", "0xF", "0xAB"),
            ReplayKey::new("n", "0xa", "0xf", "0xab")
        );
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(3), 100, 10).await.unwrap();
        guard.reserve(&key(4), 100, 10).await.unwrap();
        assert_eq!(guard.len(), 2);
    }
}
