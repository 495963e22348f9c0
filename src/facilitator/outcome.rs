//! The facilitator side of judging a settle answer: turning what an adapter returned (a
//! [`Settlement`] or a [`FacilitatorError`]) into the plain [`SettleAnswer`] the payment core
//! judges, and the receipts that go with the verdict. The decision itself lives in
//! [`crate::payment::judge_settle`].

use super::{FacilitatorError, Settlement};
use crate::payment::{
    judge_settle, AnsweredAmount, ExpectedSettlement, Failure, SettleAnswer, SettleOutcome,
    SettleReply, SettleVerdict,
};

pub use crate::payment::client_reason;

/// A settle answer, judged.
#[derive(Debug, Clone)]
pub struct Judged {
    pub outcome: SettleOutcome,
    /// The transaction the answer names (empty when none), for the receipt and the journal.
    pub transaction: String,
    /// The receipt to send the buyer, when the facilitator answered.
    pub receipt: Option<serde_json::Value>,
}

/// The amount a settle answer's JSON names: a decimal string or a number; anything else (or
/// nothing) names no amount.
fn answered_amount(raw: &serde_json::Value) -> AnsweredAmount {
    match raw.get("amount") {
        Some(serde_json::Value::String(s)) => s
            .parse::<u128>()
            .map_or(AnsweredAmount::Unreadable, AnsweredAmount::Atomic),
        Some(serde_json::Value::Number(n)) => n.as_u64().map_or(AnsweredAmount::Unreadable, |a| {
            AnsweredAmount::Atomic(u128::from(a))
        }),
        _ => AnsweredAmount::Absent,
    }
}

/// A facilitator's settle response, as plain data.
pub fn settle_reply(settlement: &Settlement) -> SettleReply<'_> {
    let response = &settlement.response;
    SettleReply {
        success: response.success,
        error_reason: response.error_reason.as_deref(),
        status: response.status.as_deref(),
        transaction: &response.transaction,
        payer: response.payer.as_deref(),
        network: &response.network,
        amount: answered_amount(&settlement.raw),
        finality: settlement.status,
    }
}

/// The result of one `/settle` call, as plain data.
pub fn settle_answer(result: &Result<Settlement, FacilitatorError>) -> SettleAnswer<'_> {
    match result {
        Ok(settlement) => SettleAnswer::Replied(settle_reply(settlement)),
        Err(e) => SettleAnswer::Failed {
            never_sent: e.never_sent(),
            failure: e.failure(),
            transaction: match e {
                FacilitatorError::Unconfirmed { transaction, .. } => transaction,
                _ => "",
            },
        },
    }
}

impl Judged {
    /// The verdict on `result`, which it consumes: the facilitator's answer moves into the
    /// receipt when it is one, so it is not copied.
    pub fn new(verdict: SettleVerdict, result: Result<Settlement, FacilitatorError>) -> Self {
        let receipt = match result {
            Ok(s) if verdict.answer_is_receipt => Some(s.raw),
            _ => None,
        };
        Self {
            outcome: verdict.outcome,
            transaction: verdict.transaction,
            receipt,
        }
    }
}

/// Judges the result of one `/settle` call against the payment it was for.
pub fn settle_outcome(
    result: Result<Settlement, FacilitatorError>,
    expected: &ExpectedSettlement,
) -> Judged {
    Judged::new(judge_settle(&settle_answer(&result), expected), result)
}

/// The receipt of an unknown outcome: not a success, and naming the transaction when one is known,
/// so the buyer can look it up instead of paying twice.
pub fn unconfirmed_receipt(judged: &Judged, expected: &ExpectedSettlement) -> serde_json::Value {
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

    fn expected() -> ExpectedSettlement<'static> {
        ExpectedSettlement {
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
            answer(
                json!({"success": true, "payer": PAYER.to_lowercase(), "transaction": "0xab", "network": "eip155:84532", "amount": "10000"}),
                Finality::Pending,
            ),
            &expected(),
        );
        assert_eq!(j.outcome, SettleOutcome::Settled(Finality::Pending));
        assert_eq!(j.transaction, "0xab");
        assert_eq!(
            j.receipt.as_ref().and_then(|r| r["transaction"].as_str()),
            Some("0xab"),
            "the facilitator's answer is the receipt"
        );
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
            (
                json!({"success": true, "payer": PAYER, "transaction": "0xab", "network": "eip155:84532", "amount": -1}),
                "settlement_amount_mismatch",
            ),
        ] {
            let j = settle_outcome(answer(raw, Finality::Confirmed), &expected());
            assert_eq!(
                j.outcome,
                SettleOutcome::Unknown {
                    detail: detail.into()
                }
            );
            assert_eq!(j.transaction, "0xab");
            assert!(j.receipt.is_none());
        }
    }

    #[test]
    fn in_flight_reasons_are_unknown_and_plain_refusals_are_refused() {
        for reason in ["settlement_pending", "payment processing", "onchain_error"] {
            let j = settle_outcome(
                answer(
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
            answer(
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
        assert_eq!(
            j.receipt.as_ref().and_then(|r| r["errorReason"].as_str()),
            Some("insufficient_funds")
        );
        let on_chain = settle_outcome(
            answer(
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
            settle_outcome(e, &expected()).outcome,
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
            let j = settle_outcome(Err(e), &expected());
            assert!(matches!(j.outcome, SettleOutcome::Unknown { .. }));
        }
        let e = Err(FacilitatorError::Unconfirmed {
            transaction: "0xef".into(),
            status: "pending".into(),
            deadline: Duration::from_secs(3),
        });
        let j = settle_outcome(e, &expected());
        assert_eq!(j.transaction, "0xef");
        assert_eq!(unconfirmed_receipt(&j, &expected())["transaction"], "0xef");
    }
}
