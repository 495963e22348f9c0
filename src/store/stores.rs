//! The stores a gateway keeps its payment state in, chosen together so that they always agree:
//! the admission store claims in the same replay guard, idempotency store and rate counter the
//! rest of the request reads and writes.

use super::{
    ChannelStore, LocalAdmission, LocalChannels, LocalRateCounter, LocalSignIn, RateCounter,
    RedisAdmission, RedisChannels, RedisIdempotency, RedisRateCounter, RedisReplayGuard,
    RedisSignIn, RedisStore, SignInStore,
};
use crate::payment::claims::AdmissionStore;
use crate::payment::idempotency::{IdempotencyStore, InMemoryIdempotency};
use crate::payment::{InMemoryReplayGuard, ReplayGuard};
use std::sync::Arc;

/// Replay reservations, kept replies of identified payments, rate-limit counters, and the store
/// that claims all three for a paid request in one exchange.
#[derive(Clone)]
pub struct Stores {
    pub replay: Arc<dyn ReplayGuard>,
    pub idempotency: Arc<dyn IdempotencyStore>,
    pub rates: Arc<dyn RateCounter>,
    pub admission: Arc<dyn AdmissionStore>,
    /// Sign-in grants and used sign-in nonces.
    pub sign_in: Arc<dyn SignInStore>,
    /// `batch-settlement` channels and the claim lease.
    pub channels: Arc<dyn ChannelStore>,
}

impl Stores {
    /// In this process's memory: one gateway on its own.
    pub fn local() -> Self {
        let replay: Arc<dyn ReplayGuard> = Arc::new(InMemoryReplayGuard::new());
        let idempotency: Arc<dyn IdempotencyStore> = Arc::new(InMemoryIdempotency::new());
        let rates: Arc<dyn RateCounter> = Arc::new(LocalRateCounter::new());
        let admission = Arc::new(LocalAdmission::new(
            replay.clone(),
            idempotency.clone(),
            rates.clone(),
        ));
        Self {
            replay,
            idempotency,
            rates,
            admission,
            sign_in: Arc::new(LocalSignIn::new()),
            channels: Arc::new(LocalChannels::new()),
        }
    }

    /// In Redis, shared by every replica pointing at it; a paid request's claims are one round
    /// trip.
    pub fn shared(store: Arc<RedisStore>) -> Self {
        let guard = Arc::new(RedisReplayGuard::new(store.clone()));
        Self {
            replay: guard.clone(),
            idempotency: Arc::new(RedisIdempotency::new(store.clone())),
            rates: Arc::new(RedisRateCounter::new(store.clone())),
            sign_in: Arc::new(RedisSignIn::new(store.clone())),
            channels: Arc::new(RedisChannels::new(store.clone())),
            admission: Arc::new(RedisAdmission::new(store, guard)),
        }
    }
}
