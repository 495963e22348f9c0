//! What a settle answer means for the money, whichever facilitator gave it: *settled*, *refused*
//! (nothing moved) or *unknown* (the transfer may still land). One reading for every adapter, so a
//! facilitator's quirks can only make an outcome more cautious, never release a paid authorization.

use super::{FacilitatorError, Settlement};
use crate::payment::{Failure, SettleOutcome};
use crate::x402::SettleResponse;

/// Refusal reasons that do not mean "nothing moved": the transfer was or may have been sent.
/// `settlement_pending`: the standard facilitator's receipt wait timed out. `payment_processing`
/// (OKX "payment processing"): a duplicate of a settlement under way. `onchain_error`: OKX's
/// broadcast failed in a way it asks to retry.
const IN_FLIGHT_REASONS: &[&str] = &[
    "settlement_pending",
    "payment_processing",
    "onchain_error",
    "unexpected_settle_error",
    "transaction_timeout",
];

/// What the payment says the settlement must be.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    pub payer: &'a str,
    /// The network as sent in the requirements (CAIP-2, or the v1 name for v1 payments).
    pub network: &'a str,
    /// The CAIP-2 network, which a facilitator may answer for a v1 payment too.
    pub caip2_network: &'a str,
    pub amount: u128,
}

/// A settle answer, judged.
#[derive(Debug, Clone)]
pub struct Judged {
    pub outcome: SettleOutcome,
    /// The transaction the answer names (empty when none), for the receipt and the journal.
    pub transaction: String,
    /// The receipt to send the buyer, when the facilitator answered.
    pub receipt: Option<serde_json::Value>,
}

/// A reason code safe to show a client: lowercase words only, else a generic one.
pub fn client_reason(reason: Option<&str>, fallback: &str) -> String {
    let clean = reason
        .map(|r| r.trim().to_ascii_lowercase().replace([' ', '-'], "_"))
        .filter(|r| {
            !r.is_empty()
                && r.len() <= 64
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    clean.unwrap_or_else(|| fallback.to_string())
}

fn contradiction(
    response: &SettleResponse,
    raw: &serde_json::Value,
    expected: &Expected,
) -> Option<String> {
    if let Some(payer) = response.payer.as_deref().filter(|p| !p.is_empty()) {
        if !payer.eq_ignore_ascii_case(expected.payer) {
            return Some("settlement_payer_mismatch".into());
        }
    }
    let network = response.network.as_str();
    if !network.is_empty() && network != expected.network && network != expected.caip2_network {
        return Some("settlement_network_mismatch".into());
    }
    let amount = raw.get("amount").and_then(|a| match a {
        serde_json::Value::String(s) => Some(s.parse::<u128>().ok()),
        serde_json::Value::Number(n) => Some(n.as_u64().map(u128::from)),
        _ => None,
    });
    match amount {
        Some(Some(a)) if a == expected.amount => None,
        Some(_) => Some("settlement_amount_mismatch".into()),
        None => None,
    }
}

/// Judges the result of one `/settle` call against the payment it was for.
pub fn settle_outcome(
    result: &Result<Settlement, FacilitatorError>,
    expected: &Expected,
) -> Judged {
    match result {
        Ok(s) if s.response.success => match contradiction(&s.response, &s.raw, expected) {
            None => Judged {
                outcome: SettleOutcome::Settled(s.status),
                transaction: s.response.transaction.clone(),
                receipt: Some(s.raw.clone()),
            },
            // Money moved somewhere, but not as this payment says: never served, never
            // released, reconciled by an operator.
            Some(detail) => Judged {
                outcome: SettleOutcome::Unknown { detail },
                transaction: s.response.transaction.clone(),
                receipt: None,
            },
        },
        Ok(s) => {
            let reason = client_reason(s.response.error_reason.as_deref(), "settlement_failed");
            // A transaction reported failed on chain is final, whatever its reason is called.
            let failed_on_chain = s.response.status.as_deref() == Some("failed");
            if !failed_on_chain && IN_FLIGHT_REASONS.contains(&reason.as_str()) {
                Judged {
                    outcome: SettleOutcome::Unknown { detail: reason },
                    transaction: s.response.transaction.clone(),
                    receipt: None,
                }
            } else {
                Judged {
                    outcome: SettleOutcome::Refused { reason },
                    transaction: String::new(),
                    receipt: Some(s.raw.clone()),
                }
            }
        }
        Err(e) if e.never_sent() => Judged {
            outcome: SettleOutcome::NotSent(e.failure()),
            transaction: String::new(),
            receipt: None,
        },
        Err(e) => Judged {
            outcome: SettleOutcome::Unknown {
                detail: e.failure().code().to_string(),
            },
            transaction: match e {
                FacilitatorError::Unconfirmed { transaction, .. } => transaction.clone(),
                _ => String::new(),
            },
            receipt: None,
        },
    }
}

/// The receipt of an unknown outcome: not a success, and naming the transaction when one is known,
/// so the buyer can look it up instead of paying twice.
pub fn unconfirmed_receipt(judged: &Judged, expected: &Expected) -> serde_json::Value {
    serde_json::json!({
        "success": false,
        "errorReason": Failure::SettlementUnconfirmed.code(),
        "payer": expected.payer,
        "transaction": judged.transaction,
        "network": expected.network,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::Finality;
    use serde_json::json;
    use std::time::Duration;

    const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

    fn expected() -> Expected<'static> {
        Expected {
            payer: PAYER,
            network: "eip155:84532",
            caip2_network: "eip155:84532",
            amount: 10_000,
        }
    }

    fn answer(raw: serde_json::Value, status: Finality) -> Result<Settlement, FacilitatorError> {
        Ok(Settlement {
            response: serde_json::from_value(raw.clone()).unwrap(),
            raw,
            status,
        })
    }

    #[test]
    fn a_matching_success_is_settled_with_its_finality() {
        let j = settle_outcome(
            &answer(
                json!({"success": true, "payer": PAYER.to_lowercase(), "transaction": "0xab", "network": "eip155:84532", "amount": "10000"}),
                Finality::Pending,
            ),
            &expected(),
        );
        assert_eq!(j.outcome, SettleOutcome::Settled(Finality::Pending));
        assert_eq!(j.transaction, "0xab");
    }

    #[test]
    fn a_success_naming_another_payer_network_or_amount_is_unknown() {
        for (raw, detail) in [
            (
                json!({"success": true, "payer": "0x0000000000000000000000000000000000000001", "transaction": "0xab", "network": "eip155:84532"}),
                "settlement_payer_mismatch",
            ),
            (
                json!({"success": true, "payer": PAYER, "transaction": "0xab", "network": "eip155:8453"}),
                "settlement_network_mismatch",
            ),
            (
                json!({"success": true, "payer": PAYER, "transaction": "0xab", "network": "eip155:84532", "amount": "1"}),
                "settlement_amount_mismatch",
            ),
        ] {
            let j = settle_outcome(&answer(raw, Finality::Confirmed), &expected());
            assert_eq!(
                j.outcome,
                SettleOutcome::Unknown {
                    detail: detail.into()
                }
            );
            assert_eq!(j.transaction, "0xab");
        }
    }

    #[test]
    fn in_flight_reasons_are_unknown_and_plain_refusals_are_refused() {
        for reason in ["settlement_pending", "payment processing", "onchain_error"] {
            let j = settle_outcome(
                &answer(
                    json!({"success": false, "errorReason": reason, "transaction": "0xcd", "network": ""}),
                    Finality::Confirmed,
                ),
                &expected(),
            );
            assert!(
                matches!(j.outcome, SettleOutcome::Unknown { .. }),
                "{reason}"
            );
            assert_eq!(j.transaction, "0xcd");
        }
        let j = settle_outcome(
            &answer(
                json!({"success": false, "errorReason": "insufficient_funds", "transaction": "", "network": ""}),
                Finality::Confirmed,
            ),
            &expected(),
        );
        assert_eq!(
            j.outcome,
            SettleOutcome::Refused {
                reason: "insufficient_funds".into()
            }
        );
        let on_chain = settle_outcome(
            &answer(
                json!({"success": false, "errorReason": "onchain_error", "status": "failed", "transaction": "0x1", "network": ""}),
                Finality::Confirmed,
            ),
            &expected(),
        );
        assert_eq!(
            on_chain.outcome,
            SettleOutcome::Refused {
                reason: "onchain_error".into()
            }
        );
    }

    #[test]
    fn errors_are_not_sent_only_when_nothing_reached_the_facilitator() {
        let e: Result<Settlement, _> = Err(FacilitatorError::Unreachable("refused".into()));
        assert_eq!(
            settle_outcome(&e, &expected()).outcome,
            SettleOutcome::NotSent(Failure::FacilitatorUnavailable)
        );
        for e in [
            FacilitatorError::Timeout(Duration::from_secs(1)),
            FacilitatorError::Status {
                status: 500,
                body: String::new(),
            },
            FacilitatorError::Garbage(String::new()),
        ] {
            let j = settle_outcome(&Err(e), &expected());
            assert!(matches!(j.outcome, SettleOutcome::Unknown { .. }));
        }
        let e = Err(FacilitatorError::Unconfirmed {
            transaction: "0xef".into(),
            status: "pending".into(),
            deadline: Duration::from_secs(3),
        });
        let j = settle_outcome(&e, &expected());
        assert_eq!(j.transaction, "0xef");
        assert_eq!(unconfirmed_receipt(&j, &expected())["transaction"], "0xef");
    }

    #[test]
    fn client_reasons_are_codes_only() {
        assert_eq!(
            client_reason(Some("Payment Processing"), "x"),
            "payment_processing"
        );
        assert_eq!(client_reason(Some("<script>"), "x"), "x");
        assert_eq!(client_reason(None, "x"), "x");
    }
}
