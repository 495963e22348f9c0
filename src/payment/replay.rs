//! The replay guard: one authorization (network, asset, payer, nonce) buys one request.
//!
//! A key is reserved before the facilitator is asked to verify, so concurrent copies of a payment
//! cannot all pass; it is released when the request ends unsettled (the buyer may retry with the same
//! authorization), kept once settled, kept as a tombstone when the settlement's outcome is unknown,
//! and forgotten after `validBefore`, when no chain would accept the authorization any more. The trait is async so a shared store can stand in for the in-memory one.

use async_trait::async_trait;
use hashbrown::HashTable;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

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
    /// Remembers authorizations a journal recorded as settled or pending, each as settled until
    /// its expiry, unless its key is already held (a replica using it now, or a final state);
    /// returns how many it newly remembered. A restarted gateway calls it with every live one:
    /// adapters over a network do it in bulk.
    async fn remember_settled(&self, recorded: &[(ReplayKey, u64)], now: u64) -> usize {
        let mut remembered = 0;
        for (key, expires_at) in recorded {
            if self.reserve(key, *expires_at, now).await.is_ok() {
                self.mark_settled(key).await;
                remembered += 1;
            }
        }
        remembered
    }
    /// Drops entries whose authorization expired; returns how many were dropped.
    async fn forget_expired(&self, now: u64) -> usize;
    /// Number of remembered authorizations.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// States an authorization can be remembered in; one byte each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    Reserved,
    Settled,
    Unknown,
}

/// One remembered authorization, packed to 37 bytes with alignment 1 (no padding): the digest, the
/// expiry as little-endian `u32` unix seconds, and the state. A million of them take 37 MB, where a
/// map of `(ReplayKey, state, u64)` entries paid for padding and for its empty buckets at the full
/// entry size.
#[derive(Debug, Clone, Copy)]
struct Record {
    key: [u8; 32],
    expires_at: [u8; 4],
    state: State,
}

const _: () = assert!(std::mem::size_of::<Record>() == 37);

impl Record {
    fn new(key: &ReplayKey, expires_at: u64, state: State) -> Self {
        Self {
            key: key.0,
            expires_at: compact_expiry(expires_at).to_le_bytes(),
            state,
        }
    }

    fn expires_at(&self) -> u64 {
        u64::from(u32::from_le_bytes(self.expires_at))
    }

    fn is_live(&self, now: u64) -> bool {
        self.expires_at() > now
    }
}

/// Unix seconds as `u32`, saturating: every expiry up to 2106 is exact, and a later one (a buyer
/// may sign any `validBefore`) stays in the future for every `now` before then. Earlier values
/// are kept as they are, so expiry compares exactly like the `u64` it stands for.
fn compact_expiry(unix_secs: u64) -> u32 {
    u32::try_from(unix_secs).unwrap_or(u32::MAX)
}

/// Number of independently locked parts of the map: enough that concurrent requests rarely wait
/// for each other, few enough that the per-part slack of growing tables stays small.
const SHARDS: usize = 64;

/// One part of the map: records stored densely, and a hash index of their positions. The index
/// holds 4-byte positions rather than the records, so its empty buckets (a power-of-two table is
/// between 44 % and 88 % full) cost 5 bytes each instead of a whole record.
#[derive(Debug, Default)]
struct Shard {
    index: HashTable<u32>,
    records: Vec<Record>,
}

impl Shard {
    fn position(&self, hash: u64, key: &[u8; 32]) -> Option<usize> {
        let records = &self.records;
        self.index
            .find(hash, |&at| records[at as usize].key == *key)
            .map(|&at| at as usize)
    }

    /// Appends a record for a key that is not present.
    fn insert(&mut self, hash: u64, record: Record, hasher: &RandomState) -> Result<(), Full> {
        let at = u32::try_from(self.records.len()).map_err(|_| Full)?;
        self.records.push(record);
        let records = &self.records;
        self.index.insert_unique(hash, at, |&other| {
            hasher.hash_one(records[other as usize].key)
        });
        Ok(())
    }

    /// Removes the record at `at` (whose key hashes to `hash`): the last record moves into its
    /// place, so the records stay dense.
    fn remove(&mut self, hash: u64, at: usize, hasher: &RandomState) {
        if let Ok(slot) = self.index.find_entry(hash, |&i| i as usize == at) {
            slot.remove();
        }
        self.records.swap_remove(at);
        if let Some(moved) = self.records.get(at) {
            let from = self.records.len();
            let moved_hash = hasher.hash_one(moved.key);
            if let Some(slot) = self.index.find_mut(moved_hash, |&i| i as usize == from) {
                // `at` fits: it is below `from`, which did.
                *slot = at as u32;
            }
        }
    }

    /// Drops expired records; returns how many. Gives memory back once at most half of it is used,
    /// so a burst of traffic does not keep its peak for good.
    fn forget_expired(&mut self, now: u64, hasher: &RandomState) -> usize {
        let before = self.records.len();
        let mut at = 0;
        while let Some(record) = self.records.get(at) {
            if record.is_live(now) {
                at += 1;
            } else {
                let hash = hasher.hash_one(record.key);
                self.remove(hash, at, hasher);
            }
        }
        let len = self.records.len();
        if self.records.capacity() / 2 > len {
            self.records.shrink_to_fit();
            let records = &self.records;
            self.index
                .shrink_to(len, |&i| hasher.hash_one(records[i as usize].key));
        }
        before - len
    }
}

/// A part of the map holds `u32::MAX` records (hundreds of gigabytes): nothing more fits.
#[derive(Debug)]
struct Full;

/// Process-local guard on a sharded, compact concurrent map: 37 bytes per authorization plus an
/// index of 4-byte positions, about 50 bytes each at a million.
#[derive(Debug)]
pub struct InMemoryReplayGuard {
    shards: Box<[Mutex<Shard>]>,
    /// Keyed per process: keys are digests a buyer can grind, so bucket positions must not be
    /// predictable from them.
    hasher: RandomState,
}

impl Default for InMemoryReplayGuard {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl InMemoryReplayGuard {
    pub fn new() -> Self {
        Self::default()
    }

    /// The key's hash and its locked shard. The shard is chosen from bits the index does not use
    /// for buckets (low bits) nor for its tags (top seven), so each shard's index stays evenly
    /// spread.
    fn shard(&self, key: &ReplayKey) -> (u64, MutexGuard<'_, Shard>) {
        let hash = self.hasher.hash_one(key.0);
        let shard = &self.shards[(hash >> 40) as usize % SHARDS];
        // The critical sections do not panic short of running out of memory, which aborts; a
        // poisoned lock is taken over rather than failing every later payment.
        (hash, shard.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// What is stored for `key`: its state and expiry.
    #[cfg(test)]
    fn stored(&self, key: &ReplayKey) -> Option<(State, u64)> {
        let (hash, shard) = self.shard(key);
        shard
            .position(hash, &key.0)
            .map(|at| (shard.records[at].state, shard.records[at].expires_at()))
    }

    /// Record slots allocated over all shards, and index buckets.
    #[cfg(test)]
    fn capacity(&self) -> (usize, usize) {
        self.shards.iter().fold((0, 0), |(records, index), shard| {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            (
                records + shard.records.capacity(),
                index + shard.index.capacity(),
            )
        })
    }

    /// Every record is found through the index at its own position, and the index holds nothing
    /// else.
    #[cfg(test)]
    fn assert_consistent(&self) {
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            assert_eq!(shard.index.len(), shard.records.len());
            for (at, record) in shard.records.iter().enumerate() {
                let hash = self.hasher.hash_one(record.key);
                assert_eq!(shard.position(hash, &record.key), Some(at));
            }
        }
    }

    fn set_state(&self, key: &ReplayKey, state: State) {
        let (hash, mut shard) = self.shard(key);
        if let Some(at) = shard.position(hash, &key.0) {
            shard.records[at].state = state;
        }
    }
}

#[async_trait]
impl ReplayGuard for InMemoryReplayGuard {
    async fn reserve(&self, key: &ReplayKey, expires_at: u64, now: u64) -> Result<(), ReplayError> {
        let (hash, mut shard) = self.shard(key);
        let record = Record::new(key, expires_at, State::Reserved);
        match shard.position(hash, &key.0) {
            Some(at) => {
                let existing = shard.records[at];
                if existing.is_live(now) {
                    return Err(match existing.state {
                        State::Reserved => ReplayError::InFlight,
                        State::Settled => ReplayError::AlreadySettled,
                        State::Unknown => ReplayError::OutcomeUnknown,
                    });
                }
                shard.records[at] = record;
                Ok(())
            }
            // Refusing is safe: nothing was charged, and the buyer may retry later.
            None => shard
                .insert(hash, record, &self.hasher)
                .map_err(|Full| ReplayError::Unavailable),
        }
    }

    async fn release(&self, key: &ReplayKey) {
        let (hash, mut shard) = self.shard(key);
        if let Some(at) = shard.position(hash, &key.0) {
            if shard.records[at].state == State::Reserved {
                shard.remove(hash, at, &self.hasher);
            }
        }
    }

    async fn mark_settled(&self, key: &ReplayKey) {
        self.set_state(key, State::Settled);
    }

    async fn keep_unknown(&self, key: &ReplayKey) {
        self.set_state(key, State::Unknown);
    }

    async fn forget_expired(&self, now: u64) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .forget_expired(now, &self.hasher)
            })
            .sum()
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .records
                    .len()
            })
            .sum()
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

    #[tokio::test]
    async fn stored_state_follows_each_step() {
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(10), 1_000, 10).await.unwrap();
        assert_eq!(guard.stored(&key(10)), Some((State::Reserved, 1_000)));
        guard.mark_settled(&key(10)).await;
        assert_eq!(guard.stored(&key(10)), Some((State::Settled, 1_000)));
        guard.release(&key(10)).await;
        assert_eq!(
            guard.stored(&key(10)),
            Some((State::Settled, 1_000)),
            "release leaves a settlement"
        );
        guard.keep_unknown(&key(10)).await;
        assert_eq!(guard.stored(&key(10)), Some((State::Unknown, 1_000)));
        guard.mark_settled(&key(11)).await;
        guard.keep_unknown(&key(11)).await;
        assert_eq!(
            guard.stored(&key(11)),
            None,
            "a state change alone remembers nothing"
        );
        guard.reserve(&key(12), 1_000, 10).await.unwrap();
        guard.release(&key(12)).await;
        assert_eq!(guard.stored(&key(12)), None);
        assert_eq!(guard.len(), 1);
    }

    #[tokio::test]
    async fn an_expired_entry_is_reserved_afresh_in_place() {
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(20), 100, 10).await.unwrap();
        guard.mark_settled(&key(20)).await;
        assert_eq!(
            guard.reserve(&key(20), 300, 99).await,
            Err(ReplayError::AlreadySettled)
        );
        assert_eq!(guard.stored(&key(20)), Some((State::Settled, 100)));
        guard.reserve(&key(20), 300, 100).await.unwrap();
        assert_eq!(guard.stored(&key(20)), Some((State::Reserved, 300)));
        assert_eq!(guard.len(), 1);
        guard.assert_consistent();
    }

    #[tokio::test]
    async fn expiries_past_the_u32_range_saturate_and_stay_refused() {
        let guard = InMemoryReplayGuard::new();
        guard.reserve(&key(30), u64::MAX, 10).await.unwrap();
        guard.mark_settled(&key(30)).await;
        assert_eq!(
            guard.stored(&key(30)),
            Some((State::Settled, u64::from(u32::MAX)))
        );
        let in_2100 = 4_102_444_800;
        assert_eq!(
            guard.reserve(&key(30), in_2100 + 60, in_2100).await,
            Err(ReplayError::AlreadySettled)
        );
        assert_eq!(guard.forget_expired(in_2100).await, 0);
        assert_eq!(guard.forget_expired(u64::from(u32::MAX)).await, 1);
        assert_eq!(guard.stored(&key(30)), None);
    }

    fn many(n: u32) -> ReplayKey {
        ReplayKey::new("eip155:8453", "0xasset", "0xpayer", &format!("0x{n:064x}"))
    }

    #[tokio::test]
    async fn releases_in_the_middle_keep_every_other_entry_reachable() {
        let guard = InMemoryReplayGuard::new();
        for n in 0..2_000 {
            guard.reserve(&many(n), 500, 10).await.unwrap();
            if n % 3 == 0 {
                guard.mark_settled(&many(n)).await;
            }
        }
        for n in (0..2_000).filter(|n| n % 2 == 1) {
            guard.release(&many(n)).await;
        }
        guard.assert_consistent();
        for n in 0..2_000 {
            let expected = match (n % 3 == 0, n % 2 == 1) {
                (true, _) => Some((State::Settled, 500)),
                (false, true) => None,
                (false, false) => Some((State::Reserved, 500)),
            };
            assert_eq!(guard.stored(&many(n)), expected, "entry {n}");
        }
    }

    #[tokio::test]
    async fn a_sweep_keeps_live_entries_and_gives_memory_back() {
        let guard = InMemoryReplayGuard::new();
        for n in 0..20_000 {
            let expires_at = if n % 1_000 == 0 { 10_000 } else { 100 };
            guard.reserve(&many(n), expires_at, 10).await.unwrap();
            guard.mark_settled(&many(n)).await;
        }
        guard.keep_unknown(&many(0)).await;
        let (records_before, index_before) = guard.capacity();
        assert!(records_before >= 20_000 && index_before >= 20_000);

        assert_eq!(guard.forget_expired(99).await, 0);
        assert_eq!(guard.len(), 20_000);
        assert_eq!(guard.forget_expired(100).await, 19_980);
        assert_eq!(guard.len(), 20);
        guard.assert_consistent();
        for n in 0..20_000 {
            let expected = match n {
                0 => Some((State::Unknown, 10_000)),
                n if n % 1_000 == 0 => Some((State::Settled, 10_000)),
                _ => None,
            };
            assert_eq!(guard.stored(&many(n)), expected, "entry {n}");
        }
        let (records_after, index_after) = guard.capacity();
        assert!(
            records_after < records_before / 10 && index_after < index_before / 10,
            "capacity {records_before}/{index_before} -> {records_after}/{index_after}"
        );

        // The shrunken map still grows and refuses as before.
        assert_eq!(
            guard.reserve(&many(1_000), 20_000, 50).await,
            Err(ReplayError::AlreadySettled)
        );
        for n in 20_000..25_000 {
            guard.reserve(&many(n), 20_000, 50).await.unwrap();
        }
        assert_eq!(guard.len(), 5_020);
        guard.assert_consistent();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_copies_of_one_authorization_pass_once() {
        let guard = std::sync::Arc::new(InMemoryReplayGuard::new());
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let guard = guard.clone();
                tokio::spawn(async move { guard.reserve(&key(40), 100, 10).await })
            })
            .collect();
        let mut passed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => passed += 1,
                Err(e) => assert_eq!(e, ReplayError::InFlight),
            }
        }
        assert_eq!(passed, 1);
        assert_eq!(guard.stored(&key(40)), Some((State::Reserved, 100)));
    }
}
