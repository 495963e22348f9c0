//! State that several gateway replicas share: replay reservations, stored replies of idempotent
//! retries, rate-limit counters. Each lives behind a small trait of the payment core; the
//! adapters here keep it in Redis so that replicas pointing at one Redis behave as one gateway.
//! Without `[redis]` the in-memory implementations serve a single process. The records of
//! `batch-settlement` payment channels can also live in the journal's PostgreSQL, where a write
//! is committed before it returns.

mod admission;
mod channels;
mod idempotency;
mod postgres;
mod rate;
mod redis;
mod replay;
mod sign_in;
mod stores;

pub use self::admission::{LocalAdmission, RedisAdmission};
pub use self::channels::{
    ChannelStore, LocalChannels, PostgresChannels, RedisChannels, StoredChannel,
};
pub use self::idempotency::RedisIdempotency;
pub use self::postgres::{database_runtime, postgres_pool};
pub use self::rate::{LocalRateCounter, RateCounter, RedisRateCounter};
pub use self::redis::{RedisStore, StoreError};
pub use self::replay::RedisReplayGuard;
pub use self::sign_in::{Grant, LocalSignIn, PostgresSignIn, RedisSignIn, SignInStore};
pub use self::stores::Stores;

/// Whether a shared store answers, for readiness and metrics.
pub trait StoreHealth: Send + Sync {
    /// What the store is, without credentials (for `/readyz`).
    fn describe(&self) -> String;
    /// Whether the last operation or probe got an answer in time.
    fn reachable(&self) -> bool;
}
