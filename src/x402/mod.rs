//! x402 wire types (protocol v1 and v2) and the base64 header codec.
//!
//! This module is the leaf of the crate: it depends on serde only and knows nothing about routes,
//! configuration, HTTP servers or facilitators. Field names are the wire contract and must not change.

mod codec;
mod networks;
mod types;

pub use codec::{decode_header_json, encode_header_json, HeaderDecodeError};
pub use networks::{chain_id_of, v1_name_of, v2_name_of};
pub use types::*;

/// Request header carrying a v2 payment.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// Request header carrying a v1 payment.
pub const X_PAYMENT: &str = "x-payment";
/// Response header carrying the v2 challenge.
pub const PAYMENT_REQUIRED: &str = "PAYMENT-REQUIRED";
/// Response header carrying the v2 settlement.
pub const PAYMENT_RESPONSE: &str = "PAYMENT-RESPONSE";
/// Response header carrying the v1 settlement.
pub const X_PAYMENT_RESPONSE: &str = "X-PAYMENT-RESPONSE";
/// Headers a browser client must be allowed to read on 402 and paid responses.
pub const EXPOSED_HEADERS: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";
