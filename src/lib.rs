//! x402-gateway: a reverse proxy that charges x402 payments per request.
//!
//! The payment core is pure (no sockets, no clock of its own): [`x402`] (wire types),
//! [`pricing`] (how a request is read and what it costs), [`payment`] (local checks and the
//! lifecycle: every money decision, as events in and decisions out), [`config`]. [`ports`] holds
//! the traits the decisions are carried out through; [`metrics`] and [`time`] are leaves every
//! layer may use. Adapters at the edge: [`facilitator`] (facilitator clients), [`store`] (memory
//! and Redis), [`ops`] (journal, admin, reload), [`state`] (one configuration version) and
//! [`proxy`] (the Pingora phases: each request owns one payment session, whose lifecycle the
//! phases feed and whose decisions one executor carries out).
//! [`buyer`] holds the client side used by the example buyer and by tests.
//!
//! The rule is checked on the sources by `tests/architecture.rs` (the core names no Pingora,
//! HTTP client or runtime crate; the modules form no cycle) rather than by splitting the crate
//! into a workspace. The core with its `time` leaf could stand alone, but a split changes no
//! behaviour and renames the paths of every adapter and test that uses it, and the source check
//! fails on the first import that breaks the rule in the fast tier, as a crate boundary would.

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
