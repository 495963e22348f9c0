//! The ports: every trait through which the payment path reaches state or the outside world, in
//! one place, with the adapters that implement each. The payment core decides; these carry out.
//!
//! | port | what it holds or does | adapters |
//! | --- | --- | --- |
//! | [`ReplayGuard`] | reservations of authorizations: held, settled, unknown | [`crate::payment::InMemoryReplayGuard`], [`crate::store::RedisReplayGuard`] |
//! | [`IdempotencyStore`] | identified payments and their kept responses | [`crate::payment::idempotency::InMemoryIdempotency`], [`crate::store::RedisIdempotency`] |
//! | [`RateCounter`] | rate-limit windows | [`crate::store::LocalRateCounter`], [`crate::store::RedisRateCounter`] |
//! | [`AdmissionStore`] | a paid request's claims (rates, identifier, reservation) in one exchange | [`crate::store::LocalAdmission`], [`crate::store::RedisAdmission`] |
//! | [`SignInStore`] | sign-in grants and used sign-in nonces | [`crate::store::LocalSignIn`], [`crate::store::RedisSignIn`], [`crate::store::PostgresSignIn`] |
//! | [`ChannelStore`] | `batch-settlement` channels: compare-and-set records and the claim lease | [`crate::store::LocalChannels`], [`crate::store::RedisChannels`], [`crate::store::PostgresChannels`] |
//! | [`Journal`] | the durable record of every payment event | [`crate::ops::FileJournal`], [`crate::ops::PgJournal`] |
//! | [`Facilitator`] | `/verify`, `/settle`, `/supported` | standard x402, OKX, AgentWallex, local test mode ([`crate::facilitator`]) |
//! | clock | the wall clock, read in one place | [`crate::time`] |
//!
//! [`crate::store::Stores`] chooses the state ports together (in memory, in Redis, or, for
//! sign-ins and channels without Redis, in the journal's PostgreSQL).

pub use crate::facilitator::Facilitator;
pub use crate::payment::claims::AdmissionStore;
pub use crate::payment::idempotency::IdempotencyStore;
pub use crate::payment::ReplayGuard;
pub use crate::store::{ChannelStore, RateCounter, SignInStore};

use crate::payment::PaymentState;
use crate::time::rfc3339_now;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One line of the journal. Never holds signatures or payment headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// Identity of the payment across its lines (derived from the authorization).
    pub id: String,
    pub state: PaymentState,
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub payer: String,
    /// Atomic units.
    #[serde(default)]
    pub amount: String,
    /// Token address.
    #[serde(default)]
    pub asset: String,
    #[serde(default)]
    pub network: String,
    #[serde(default)]
    pub pay_to: String,
    #[serde(default)]
    pub transaction: String,
    #[serde(default)]
    pub facilitator: String,
    #[serde(default)]
    pub reason: String,
    /// The replay-guard key, so a restart keeps refusing settled authorizations.
    #[serde(default)]
    pub key: String,
    /// Unix seconds after which the authorization is void on chain.
    #[serde(default)]
    pub valid_before: u64,
    /// The settle request as sent, for a settlement whose outcome is unknown: a facilitator
    /// without a status API is asked again with the identical request, as the x402 SDKs do.
    /// It carries the signed authorization, so it is never written to a journal file; the
    /// database keeps it only while the payment is pending.
    #[serde(skip)]
    pub settle_request: String,
}

impl JournalEntry {
    /// The next state of the same payment, stamped now.
    pub fn next(&self, state: PaymentState) -> Self {
        Self {
            time: rfc3339_now(),
            state,
            reason: String::new(),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    #[error("cannot open the journal {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("cannot write the journal: {0}")]
    Write(String),
    #[error("cannot read the journal {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the journal database is unavailable: {0}")]
    Database(String),
    /// Another request (on this or another replica) holds this authorization, or it was settled:
    /// `state` is where it stands.
    #[error("this authorization is already recorded as {}", state.as_str())]
    AlreadyRecorded { state: PaymentState },
}

/// Where payment events are recorded.
#[async_trait]
pub trait Journal: Send + Sync {
    /// Records `entry` durably; returns once it is on disk.
    async fn append(&self, entry: JournalEntry) -> Result<(), JournalError>;
    /// Entries whose latest state is pending.
    fn pending(&self) -> Vec<JournalEntry>;
}
