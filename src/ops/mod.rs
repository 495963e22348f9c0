//! Operating the gateway: the admin listener (health, readiness, metrics, the admin API and the
//! operator's console), the settlement journal, hot reload and graceful shutdown. These are
//! adapters around the proxy; the payment core never depends on them.

pub mod admin;
pub mod admin_api;
pub mod claims;
pub mod journal;
pub mod receipts;
pub mod reload;
pub mod shutdown;

pub use crate::metrics::Metrics;
pub use admin::{
    AdminApp, FacilitatorProbe, Health, InFlight, HEALTHZ_PATH, METRICS_PATH, READYZ_PATH,
};
pub use journal::{FileJournal, Journal, JournalEntry, JournalError, PaymentState, PgJournal};
pub use reload::Reloader;
pub use shutdown::DrainingShutdown;
