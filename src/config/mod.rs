//! `gateway.toml`: from the surface format to one validated model that the proxy consumes.
//!
//! Loading never panics and never prints secrets: every problem becomes a [`ConfigError`] naming the
//! file, line and column, and secret values live in [`Secret`], whose `Debug` is redacted.
//!
//! [`model`] is what the rest of the gateway sees: validated settings with no trace of the file
//! format. [`build`] turns the surface format ([`surface`], serde types that mirror the file) into
//! that model, checking every key against every other. [`openapi`] writes a configuration from an
//! OpenAPI description and describes a configuration's routes as one.

mod build;
mod duration;
mod model;
pub mod openapi;
mod size;
mod surface;

pub use duration::parse_duration;
pub use model::*;
pub use size::parse_size;

#[cfg(test)]
mod tests;
