//! When a route settles a verified payment relative to the upstream call.

use serde::{Deserialize, Serialize};

/// The `extra` key that tells a buyer when the server settles (x402 v2).
pub const PAYMENT_FLOW: &str = "paymentFlow";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SettlementPolicy {
    /// Proxy first; settle only when the upstream answered below 400, so nobody pays for a failure.
    #[default]
    AfterSuccess,
    /// Settle first, then proxy: for streaming or irreversible upstream work.
    Before,
}

impl SettlementPolicy {
    /// Whether an upstream status earns a settlement under `after-success`.
    pub fn upstream_succeeded(status: u16) -> bool {
        status < 400
    }

    /// The `extra.paymentFlow` the challenge announces: `"upfront"` when settling first; the
    /// default `"authorization"` flow is never written.
    pub fn payment_flow(self) -> Option<&'static str> {
        match self {
            Self::AfterSuccess => None,
            Self::Before => Some("upfront"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AfterSuccess => "after-success",
            Self::Before => "before",
        }
    }
}

/// Who checks a payment before the upstream is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyPolicy {
    /// The gateway's local checks, then the facilitator's `/verify`: the upstream only works for
    /// a payment the facilitator has found good (funds included).
    #[default]
    Facilitator,
    /// The gateway's local checks alone (signature, terms, time window, replay); the
    /// facilitator's checks happen once, at `/settle`. One exchange fewer per paid request; the
    /// upstream may work for a buyer whose funds turn out short, and that answer is withheld.
    Local,
}

impl VerifyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Facilitator => "facilitator",
            Self::Local => "local",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_statuses_below_400_are_charged() {
        assert!(SettlementPolicy::upstream_succeeded(200));
        assert!(SettlementPolicy::upstream_succeeded(304));
        assert!(!SettlementPolicy::upstream_succeeded(404));
        assert!(!SettlementPolicy::upstream_succeeded(500));
    }
}
