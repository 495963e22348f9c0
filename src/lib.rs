//! x402-gateway: a reverse proxy that charges x402 payments per request.
//!
//! The payment core ([`x402`], [`pricing`], [`payment`], [`config`]) is pure: no sockets, no clocks
//! of its own. Adapters at the edge ([`facilitator`], [`proxy`], [`ops`]) connect it to facilitators, to
//! Pingora and to the operator. [`buyer`] holds the client side used by the example buyer and by tests.

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
