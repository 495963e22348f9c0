//! What a settle answer means for the money, whichever facilitator gave it: *settled*, *refused*
//! (nothing moved), *not sent* (nothing moved) or *unknown* (the transfer may still land).
//!
//! One reading for every adapter and for reconciliation, so a facilitator's quirks can only make an
//! outcome more cautious, never release a paid authorization. The answer is plain data: each
//! facilitator adapter turns its own response or error into a [`SettleAnswer`] first.

use super::lifecycle::{Failure, Finality, SettleOutcome};

/// Refusal reasons that do not mean "nothing moved": the transfer was or may have been sent.
/// `settlement_pending`: the standard facilitator's receipt wait timed out. `payment_processing`
/// (OKX "payment processing"): a duplicate of a settlement under way. `onchain_error`: OKX's
/// broadcast failed in a way it asks to retry.
pub const IN_FLIGHT_REASONS: &[&str] = &[
    "settlement_pending",
    "payment_processing",
    "onchain_error",
    "unexpected_settle_error",
    "transaction_timeout",
];

/// The amount a settle answer names, as it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredAmount {
    /// The answer names no amount (or one of a type no facilitator uses): nothing to compare.
    Absent,
    /// The answer names an amount that is not a non-negative integer of atomic units.
    Unreadable,
    Atomic(u128),
}

/// A facilitator's answer to `/settle`, as plain data borrowed from the adapter's response
/// (judging it copies only the transaction it keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleReply<'a> {
    pub success: bool,
    /// The facilitator's own reason code, as sent (cleaned by [`client_reason`]).
    pub error_reason: Option<&'a str>,
    /// The on-chain state where the facilitator reports one (`pending`, `failed`, ...).
    pub status: Option<&'a str>,
    /// The transaction the answer names (empty when none).
    pub transaction: &'a str,
    pub payer: Option<&'a str>,
    /// The network the answer names (empty when none).
    pub network: &'a str,
    pub amount: AnsweredAmount,
    /// How final the adapter reads a successful answer to be.
    pub finality: Finality,
}

/// The result of one `/settle` call, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleAnswer<'a> {
    /// The facilitator answered with a settle response.
    Replied(SettleReply<'a>),
    /// The call failed without a settle response.
    Failed {
        /// Whether the request certainly had no effect at the facilitator (it never arrived, or
        /// was refused before being processed).
        never_sent: bool,
        /// What a client is told.
        failure: Failure,
        /// A transaction known to have been broadcast (empty when none).
        transaction: &'a str,
    },
}

/// What the payment says the settlement must be.
#[derive(Debug, Clone)]
pub struct ExpectedSettlement<'a> {
    pub payer: &'a str,
    /// The network as sent in the requirements (CAIP-2, or the v1 name for v1 payments).
    pub network: &'a str,
    /// The CAIP-2 network, which a facilitator may answer for a v1 payment too.
    pub caip2_network: &'a str,
    pub amount: u128,
}

/// A settle answer, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleVerdict {
    pub outcome: SettleOutcome,
    /// The transaction the answer names (empty when none), for the receipt and the journal.
    pub transaction: String,
    /// Whether the facilitator's own answer goes to the buyer as the receipt (it settled, or it
    /// refused and nothing moved). An unknown outcome gets the gateway's own receipt instead.
    pub answer_is_receipt: bool,
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

/// Why a successful answer is not this payment's settlement, if it names something else.
fn contradiction(reply: &SettleReply, expected: &ExpectedSettlement) -> Option<String> {
    if let Some(payer) = reply.payer.filter(|p| !p.is_empty()) {
        if !payer.eq_ignore_ascii_case(expected.payer) {
            return Some("settlement_payer_mismatch".into());
        }
    }
    let network = reply.network;
    if !network.is_empty() && network != expected.network && network != expected.caip2_network {
        return Some("settlement_network_mismatch".into());
    }
    match reply.amount {
        AnsweredAmount::Absent => None,
        AnsweredAmount::Atomic(a) if a == expected.amount => None,
        AnsweredAmount::Atomic(_) | AnsweredAmount::Unreadable => {
            Some("settlement_amount_mismatch".into())
        }
    }
}

/// Judges the answer to one `/settle` call against the payment it was for.
pub fn judge_settle(answer: &SettleAnswer, expected: &ExpectedSettlement) -> SettleVerdict {
    match answer {
        SettleAnswer::Replied(reply) if reply.success => match contradiction(reply, expected) {
            None => SettleVerdict {
                outcome: SettleOutcome::Settled(reply.finality),
                transaction: reply.transaction.to_string(),
                answer_is_receipt: true,
            },
            // Money moved somewhere, but not as this payment says: never served, never
            // released, reconciled by an operator.
            Some(detail) => SettleVerdict {
                outcome: SettleOutcome::Unknown { detail },
                transaction: reply.transaction.to_string(),
                answer_is_receipt: false,
            },
        },
        SettleAnswer::Replied(reply) => {
            let reason = client_reason(reply.error_reason, "settlement_failed");
            // A transaction reported failed on chain is final, whatever its reason is called.
            let failed_on_chain = reply.status == Some("failed");
            if !failed_on_chain && IN_FLIGHT_REASONS.contains(&reason.as_str()) {
                SettleVerdict {
                    outcome: SettleOutcome::Unknown { detail: reason },
                    transaction: reply.transaction.to_string(),
                    answer_is_receipt: false,
                }
            } else {
                SettleVerdict {
                    outcome: SettleOutcome::Refused { reason },
                    transaction: String::new(),
                    answer_is_receipt: true,
                }
            }
        }
        SettleAnswer::Failed {
            never_sent: true,
            failure,
            ..
        } => SettleVerdict {
            outcome: SettleOutcome::NotSent(*failure),
            transaction: String::new(),
            answer_is_receipt: false,
        },
        SettleAnswer::Failed {
            never_sent: false,
            failure,
            transaction,
        } => SettleVerdict {
            outcome: SettleOutcome::Unknown {
                detail: failure.code().to_string(),
            },
            transaction: transaction.to_string(),
            answer_is_receipt: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";
    /// The payer as facilitators often write it: the comparison ignores case.
    const PAYER_LOWERCASE: &str = "0x857b06519e91e3a54538791bdbb0e22373e36b66";

    fn expected() -> ExpectedSettlement<'static> {
        ExpectedSettlement {
            payer: PAYER,
            network: "eip155:84532",
            caip2_network: "eip155:84532",
            amount: 10_000,
        }
    }

    fn success(transaction: &str) -> SettleReply<'_> {
        SettleReply {
            success: true,
            error_reason: None,
            status: None,
            transaction,
            payer: Some(PAYER_LOWERCASE),
            network: "eip155:84532",
            amount: AnsweredAmount::Atomic(10_000),
            finality: Finality::Confirmed,
        }
    }

    fn refusal<'a>(reason: &'a str, status: Option<&'a str>) -> SettleReply<'a> {
        SettleReply {
            success: false,
            error_reason: Some(reason),
            status,
            transaction: "0xcd",
            payer: None,
            network: "",
            amount: AnsweredAmount::Absent,
            finality: Finality::Confirmed,
        }
    }

    #[test]
    fn a_matching_success_is_settled_with_its_finality_and_passed_on_as_receipt() {
        for finality in [Finality::Confirmed, Finality::Pending, Finality::Batched] {
            let reply = SettleReply {
                finality,
                ..success("0xab")
            };
            let v = judge_settle(&SettleAnswer::Replied(reply), &expected());
            assert_eq!(v.outcome, SettleOutcome::Settled(finality));
            assert_eq!(v.transaction, "0xab");
            assert!(v.answer_is_receipt);
        }
        // A v1 payment's facilitator may answer with the CAIP-2 name.
        let v1 = ExpectedSettlement {
            network: "base-sepolia",
            ..expected()
        };
        let v = judge_settle(&SettleAnswer::Replied(success("0xab")), &v1);
        assert_eq!(v.outcome, SettleOutcome::Settled(Finality::Confirmed));
    }

    #[test]
    fn a_success_naming_another_payer_network_or_amount_is_unknown() {
        for (reply, detail) in [
            (
                SettleReply {
                    payer: Some("0x0000000000000000000000000000000000000001"),
                    ..success("0xab")
                },
                "settlement_payer_mismatch",
            ),
            (
                SettleReply {
                    network: "eip155:8453",
                    ..success("0xab")
                },
                "settlement_network_mismatch",
            ),
            (
                SettleReply {
                    amount: AnsweredAmount::Atomic(1),
                    ..success("0xab")
                },
                "settlement_amount_mismatch",
            ),
            (
                SettleReply {
                    amount: AnsweredAmount::Unreadable,
                    ..success("0xab")
                },
                "settlement_amount_mismatch",
            ),
        ] {
            let v = judge_settle(&SettleAnswer::Replied(reply), &expected());
            assert_eq!(
                v.outcome,
                SettleOutcome::Unknown {
                    detail: detail.into()
                }
            );
            assert_eq!(v.transaction, "0xab");
            assert!(!v.answer_is_receipt);
        }
        // Nothing named, nothing contradicted.
        let silent = SettleReply {
            payer: None,
            network: "",
            amount: AnsweredAmount::Absent,
            ..success("0xab")
        };
        let v = judge_settle(&SettleAnswer::Replied(silent), &expected());
        assert_eq!(v.outcome, SettleOutcome::Settled(Finality::Confirmed));
    }

    #[test]
    fn in_flight_reasons_are_unknown_unless_failed_on_chain_and_plain_refusals_are_refused() {
        for reason in IN_FLIGHT_REASONS
            .iter()
            .copied()
            .chain(["payment processing"])
        {
            let v = judge_settle(&SettleAnswer::Replied(refusal(reason, None)), &expected());
            assert!(
                matches!(v.outcome, SettleOutcome::Unknown { .. }),
                "{reason}"
            );
            assert_eq!(v.transaction, "0xcd");
            assert!(!v.answer_is_receipt);
        }
        let v = judge_settle(
            &SettleAnswer::Replied(refusal("insufficient_funds", None)),
            &expected(),
        );
        assert_eq!(
            v.outcome,
            SettleOutcome::Refused {
                reason: "insufficient_funds".into()
            }
        );
        assert_eq!(v.transaction, "");
        assert!(v.answer_is_receipt);
        let on_chain = judge_settle(
            &SettleAnswer::Replied(refusal("onchain_error", Some("failed"))),
            &expected(),
        );
        assert_eq!(
            on_chain.outcome,
            SettleOutcome::Refused {
                reason: "onchain_error".into()
            }
        );
        let unnamed = SettleReply {
            error_reason: None,
            ..refusal("", None)
        };
        let v = judge_settle(&SettleAnswer::Replied(unnamed), &expected());
        assert_eq!(
            v.outcome,
            SettleOutcome::Refused {
                reason: "settlement_failed".into()
            }
        );
    }

    #[test]
    fn failures_are_not_sent_only_when_nothing_reached_the_facilitator() {
        let v = judge_settle(
            &SettleAnswer::Failed {
                never_sent: true,
                failure: Failure::FacilitatorUnavailable,
                transaction: "",
            },
            &expected(),
        );
        assert_eq!(
            v.outcome,
            SettleOutcome::NotSent(Failure::FacilitatorUnavailable)
        );
        let v = judge_settle(
            &SettleAnswer::Failed {
                never_sent: false,
                failure: Failure::SettlementUnconfirmed,
                transaction: "0xef",
            },
            &expected(),
        );
        assert_eq!(
            v.outcome,
            SettleOutcome::Unknown {
                detail: "settlement_unconfirmed".into()
            }
        );
        assert_eq!(v.transaction, "0xef");
        assert!(!v.answer_is_receipt);
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
