//! What a facilitator's `/verify` answer means for the payment: accepted, refused (with the reason
//! a client may see), or contradicted, when it says "valid" about another payment than the one
//! sent. A contradicted answer is treated as a facilitator failure: nothing is charged, the
//! upstream is not called and the reservation is released, as for an answer that cannot be read.

use super::lifecycle::{Event, Failure};
use super::settle_answer::client_reason;

/// A facilitator's answer to `/verify`, as plain data borrowed from the adapter's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReply<'a> {
    pub is_valid: bool,
    /// The facilitator's own reason code, as sent (cleaned by [`client_reason`]).
    pub invalid_reason: Option<&'a str>,
    /// The payer the facilitator verified, where it names one.
    pub payer: Option<&'a str>,
}

/// A verify answer, judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyVerdict {
    Accepted,
    /// The facilitator refused the payment; `reason` is safe to show the client.
    Refused {
        reason: String,
    },
    /// A "valid" answer about something else than this payment; `detail` is for the log.
    Contradicted {
        detail: &'static str,
    },
}

impl VerifyVerdict {
    /// The lifecycle event this verdict is.
    pub fn event(self) -> Event {
        match self {
            Self::Accepted => Event::Accepted,
            Self::Refused { reason } => Event::VerifyRefused { reason },
            Self::Contradicted { .. } => Event::VerifyFailed(Failure::FacilitatorBadResponse),
        }
    }
}

/// Judges a `/verify` answer for the payment signed by `payer`. The standard answer names only the
/// payer (not the network or amount), so that is what is compared; an answer naming no payer
/// contradicts nothing.
pub fn judge_verify(reply: &VerifyReply, payer: &str) -> VerifyVerdict {
    if !reply.is_valid {
        return VerifyVerdict::Refused {
            reason: client_reason(reply.invalid_reason, "payment_invalid"),
        };
    }
    match reply.payer.filter(|p| !p.is_empty()) {
        Some(named) if !named.eq_ignore_ascii_case(payer) => VerifyVerdict::Contradicted {
            detail: "verify_payer_mismatch",
        },
        _ => VerifyVerdict::Accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYER: &str = "0x857b06519E91e3A54538791bDbb0E22373e36b66";

    fn valid(payer: Option<&str>) -> VerifyReply<'_> {
        VerifyReply {
            is_valid: true,
            invalid_reason: None,
            payer,
        }
    }

    #[test]
    fn a_valid_answer_for_this_payer_is_accepted_whatever_the_case() {
        for named in [
            Some(PAYER),
            Some("0x857b06519e91e3a54538791bdbb0e22373e36b66"),
            None,
            Some(""),
        ] {
            assert_eq!(
                judge_verify(&valid(named), PAYER),
                VerifyVerdict::Accepted,
                "{named:?}"
            );
        }
    }

    #[test]
    fn a_valid_answer_for_another_payer_is_a_facilitator_failure_not_an_acceptance() {
        let verdict = judge_verify(
            &valid(Some("0x0000000000000000000000000000000000000bad")),
            PAYER,
        );
        assert_eq!(
            verdict,
            VerifyVerdict::Contradicted {
                detail: "verify_payer_mismatch"
            }
        );
        assert_eq!(
            verdict.event(),
            Event::VerifyFailed(Failure::FacilitatorBadResponse)
        );
    }

    #[test]
    fn an_invalid_answer_is_refused_with_a_clean_reason() {
        let refused = |reason| VerifyReply {
            is_valid: false,
            invalid_reason: reason,
            payer: Some(PAYER),
        };
        assert_eq!(
            judge_verify(&refused(Some("Insufficient Funds")), PAYER).event(),
            Event::VerifyRefused {
                reason: "insufficient_funds".into()
            }
        );
        assert_eq!(
            judge_verify(&refused(Some("<b>no</b>")), PAYER),
            VerifyVerdict::Refused {
                reason: "payment_invalid".into()
            }
        );
        assert_eq!(
            judge_verify(&refused(None), PAYER),
            VerifyVerdict::Refused {
                reason: "payment_invalid".into()
            }
        );
    }
}
