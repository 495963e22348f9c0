//! x402-gateway: a reverse proxy that charges x402 payments per request.
//!
//! The payment core is pure (no sockets, no clock of its own): [`x402`] (wire types),
//! [`pricing`] (how a request is read and what it costs), [`payment`] (local checks and the
//! lifecycle: every money decision, as events in and decisions out), [`config`]. [`ports`] holds
//! the traits the decisions are carried out through; [`metrics`] and [`time`] are leaves every
//! layer may use. Adapters at the edge: [`facilitator`] (facilitator clients), [`store`] (memory
//! and Redis), [`ops`] (journal, admin, reload), [`state`] (one configuration version) and
//! [`proxy`] (the Pingora phases, which feed the lifecycle and carry out what it returns).
//! [`buyer`] holds the client side used by the example buyer and by tests.

pub mod buyer;
pub mod config;
pub mod demo;
pub mod facilitator;
pub mod metrics;
pub mod ops;
pub mod payment;
pub mod ports;
pub mod pricing;
pub mod proxy;
pub mod state;
pub mod store;
pub mod time;
pub mod x402;
