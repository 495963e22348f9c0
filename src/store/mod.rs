//! State that several gateway replicas share: replay reservations, stored replies of idempotent
//! retries, rate-limit counters. Each lives behind a small trait of the payment core; the
//! adapters here keep it in Redis so that replicas pointing at one Redis behave as one gateway.
//! Without `[redis]` the in-memory implementations serve a single process.

mod admission;
mod idempotency;
mod rate;
mod redis;
mod replay;
mod stores;

pub use self::admission::{LocalAdmission, RedisAdmission};
pub use self::idempotency::RedisIdempotency;
pub use self::rate::{LocalRateCounter, RateCounter, RedisRateCounter};
pub use self::redis::{RedisStore, StoreError};
pub use self::replay::RedisReplayGuard;
pub use self::stores::Stores;

/// Whether a shared store answers, for readiness and metrics.
pub trait StoreHealth: Send + Sync {
    /// What the store is, without credentials (for `/readyz`).
    fn describe(&self) -> String;
    /// Whether the last operation or probe got an answer in time.
    fn reachable(&self) -> bool;
}
