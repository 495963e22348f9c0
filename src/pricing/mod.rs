//! Routes, prices and assets: which request costs what.
//!
//! Everything here is computed once per configuration version and read by every request, so the
//! types are immutable and cheap to share. This module never performs I/O.

mod assets;
mod body_override;
mod challenge;
pub mod discovery;
mod fees;
pub mod mcp;
mod metering;
mod money;
mod path;
mod request;
mod routes;
mod rules;
mod settlement;

pub use assets::{checksum as checksum_address, Asset, AssetRegistry};
pub use body_override::{body_encoding, body_method_override, BodyEncoding, MAX_BODY_BYTES};
pub use challenge::ChallengeTemplate;
pub use fees::{quote_fee, FeeQuote, FeeTier};
pub use metering::{
    Meter, Metering, UsageFallback, UsageHeader, UsageJson, UsagePath, UsagePathError,
    UsageReadError,
};
pub use money::{format_units, parse_price, MoneyError};
pub use path::canonical_path;
pub use request::{
    body_could_reprice, headers_to_drop, normalise, reprice_by_body, MethodOverride, PricedAs,
    Refusal, RequestRules,
};
pub use routes::{
    MethodMatch, PaymentOption, PricedRoute, Route, RouteKind, RoutePattern, RouteTable, Segment,
};
pub use rules::{PriceCondition, PriceRule, RequestFacts, RuleMatch};
pub use settlement::{SettlementPolicy, VerifyPolicy, PAYMENT_FLOW};
