//! Carrying out the lifecycle's decisions: the reservation, the journal line, the `/settle` call
//! and the replies that follow from them. Nothing here decides about money; it does what
//! [`Lifecycle::on`] said.

use super::reply::Reply;
use super::{Gateway, GatewayState};
use crate::facilitator::{
    settle_outcome, unconfirmed_receipt, Expected, Facilitator, FacilitatorRequest,
};
use crate::metrics::Metrics;
use crate::ops::journal::{JournalEntry, JournalError};
use crate::payment::{
    Answer, Event, Failure, JournalWrite, Lifecycle, Outcome, PaymentState, Receipt, Refusal,
    Reservation, SettleOutcome, SettlementPolicy, VerifiedPayment,
};
use crate::x402::encode_header_json;
use std::sync::Arc;
use std::time::Instant;

/// A paid request on its way through the phases.
pub(super) struct PaidRequest {
    pub version: u8,
    pub verified: VerifiedPayment,
    pub request: FacilitatorRequest,
    /// The CAIP-2 network of the matched option.
    pub network: String,
    pub life: Lifecycle,
    /// The facilitator that verified the payment: the only one that may settle it. Settling up
    /// front, the network's until `/settle`, which may go to its fallback when it is unreachable;
    /// after `/settle`, the one that answered.
    pub facilitator: Option<Arc<dyn Facilitator>>,
    /// The encoded settlement answer, sent as `PAYMENT-RESPONSE` once there is one.
    pub receipt: Option<String>,
    pub transaction: String,
    /// The journal line this payment's events are written from.
    pub entry: Option<JournalEntry>,
    pub route_index: Option<usize>,
    /// The priced item of an MCP route it pays for (metrics per tool).
    pub item_index: Option<usize>,
    /// The outcome the lifecycle decided, counted when the request ends.
    pub outcome: Option<Outcome>,
}

impl PaidRequest {
    /// The settlement answer received for this payment, as the client gets it.
    pub fn settlement_receipt(&self) -> Option<Receipt> {
        self.receipt.clone().map(|encoded| Receipt {
            version: self.version,
            encoded,
        })
    }

    fn expected(&self) -> Expected<'_> {
        Expected {
            payer: &self.verified.payer,
            network: self.request.network(),
            caip2_network: &self.network,
            amount: self.verified.amount,
        }
    }
}

impl Gateway {
    /// Feeds `event` to the payment's lifecycle and carries out the decision: reservation,
    /// journal (on disk before any reply depends on it), outcome. Returns what to answer.
    pub(super) async fn feed(&self, payment: &mut PaidRequest, event: Event) -> Answer {
        let mut decision = payment.life.on(event);
        loop {
            match decision.reservation {
                Reservation::Keep => {}
                Reservation::Release => self.replay.release(&payment.verified.replay_key).await,
                // Recorded settled with the kept response when the request ends.
                Reservation::BurnWithResponse => {}
                Reservation::Burn => self.replay.mark_settled(&payment.verified.replay_key).await,
                Reservation::Tombstone => {
                    self.replay.keep_unknown(&payment.verified.replay_key).await
                }
            }
            if let Some(outcome) = decision.outcome {
                payment.outcome = Some(outcome);
            }
            if let Some((state, reason)) = &decision.journal {
                let written = match self.record(payment.entry.as_ref(), *state, reason).await {
                    Ok(()) => JournalWrite::Written,
                    // A shared journal knows authorizations this replica's replay guard has not
                    // seen: held by another request, or already used.
                    Err(JournalError::AlreadyRecorded { state: held })
                        if *state == PaymentState::Verified =>
                    {
                        Metrics::global().replays_refused.inc();
                        JournalWrite::HeldElsewhere { state: held }
                    }
                    Err(e) => {
                        tracing::error!(payer = %payment.verified.payer, state = state.as_str(), error = %e, "the journal could not record a payment event");
                        JournalWrite::Failed
                    }
                };
                if let Some(next) = payment.life.journal_answered(*state, written) {
                    decision = next;
                    continue;
                }
            }
            return decision.answer;
        }
    }

    /// Calls `/settle` once and feeds its judged answer.
    pub(super) async fn settle(&self, state: &GatewayState, payment: &mut PaidRequest) -> Answer {
        let Some(verifier) = payment.facilitator.clone() else {
            let outcome = SettleOutcome::NotSent(Failure::FacilitatorUnavailable);
            return self.feed(payment, Event::SettleAnswered(outcome)).await;
        };
        let started = Instant::now();
        let (facilitator, result) = if payment.life.policy() == SettlementPolicy::Before {
            // Nobody verified an up-front payment: the router picks the network's facilitator,
            // or its fallback when that one cannot be reached.
            match state
                .facilitators
                .settle_with_fallback(&payment.network, &payment.request)
                .await
            {
                Some(verdict) => (verdict.facilitator, verdict.result),
                None => {
                    let outcome = SettleOutcome::NotSent(Failure::FacilitatorUnavailable);
                    return self.feed(payment, Event::SettleAnswered(outcome)).await;
                }
            }
        } else {
            let result = verifier.settle(&payment.request).await;
            (verifier, result)
        };
        // The facilitator that answered is the one that may have moved the money: the journal
        // names it so that reconciliation asks it, not the one that was down.
        payment.facilitator = Some(facilitator.clone());
        if let Some(entry) = payment.entry.as_mut() {
            entry.facilitator = facilitator.name().to_string();
        }
        let fmetrics = state.facilitator_metrics_named(facilitator.name());
        fmetrics
            .settle_seconds
            .observe(started.elapsed().as_secs_f64());
        let expected = payment.expected();
        let mut judged = settle_outcome(&result, &expected);
        let receipt = match &judged.outcome {
            SettleOutcome::Settled(_) | SettleOutcome::Refused { .. } => judged.receipt.clone(),
            SettleOutcome::Unknown { .. } => Some(unconfirmed_receipt(&judged, &expected)),
            SettleOutcome::NotSent(_) => None,
        };
        match (&judged.outcome, &result) {
            (SettleOutcome::Settled(finality), _) => {
                fmetrics.settled.inc();
                // Counted when the money moves, whatever happens to the response afterwards.
                if let Some(revenue) = state
                    .metrics_for(payment.route_index, payment.item_index)
                    .and_then(|m| m.revenue.get(payment.verified.option_index))
                {
                    revenue.inc_by(u64::try_from(payment.verified.amount).unwrap_or(u64::MAX));
                }
                tracing::debug!(finality = finality.as_str(), "settled");
            }
            (SettleOutcome::Refused { reason }, _) => {
                fmetrics.failed(reason);
                tracing::warn!(payer = %payment.verified.payer, %reason, "settlement refused");
            }
            (outcome, Err(e)) => {
                fmetrics.failed(e.failure().code());
                tracing::error!(facilitator = facilitator.name(), error = %e, payer = %payment.verified.payer, ?outcome, "settlement failed");
            }
            (outcome, Ok(answer)) => {
                fmetrics.failed(Failure::SettlementUnconfirmed.code());
                tracing::error!(facilitator = facilitator.name(), answer = %answer.raw, payer = %payment.verified.payer, ?outcome, "settlement outcome unknown");
            }
        }
        payment.transaction = judged.transaction.clone();
        payment.receipt = receipt.map(|r| encode_header_json(&r));
        if let Some(entry) = payment.entry.as_mut() {
            entry.transaction = payment.transaction.clone();
            keep_for_resend(
                &payment.request,
                &mut entry.settle_request,
                &mut judged.outcome,
            );
        }
        self.feed(payment, Event::SettleAnswered(judged.outcome))
            .await
    }

    /// Feeds `event`, then settles when the lifecycle says so: the answer after both.
    pub(super) async fn advance(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
        event: Event,
    ) -> Answer {
        match self.feed(payment, event).await {
            Answer::Settle => self.settle(state, payment).await,
            other => other,
        }
    }
}

/// Keeps the settle request of a settlement whose outcome is unknown, for reconciliation to send
/// again identically. A request that cannot be kept is said in the outcome's journal reason
/// (`resend_unavailable`) and logged: the payment stays pending for an operator to settle the
/// question on chain, rather than looking like a payment that needs no resend.
fn keep_for_resend(
    request: &impl serde::Serialize,
    kept: &mut String,
    outcome: &mut SettleOutcome,
) {
    let SettleOutcome::Unknown { detail } = outcome else {
        return;
    };
    match serde_json::to_string(request) {
        Ok(request) => *kept = request,
        Err(e) => {
            tracing::error!(error = %e, reason = %detail, "the settle request cannot be kept for reconciliation to resend; the payment stays pending for an operator");
            kept.clear();
            *detail = if detail.is_empty() {
                RESEND_UNAVAILABLE.to_string()
            } else {
                format!("{detail}; {RESEND_UNAVAILABLE}")
            };
        }
    }
}

/// The journal reason's mark of a pending settlement reconciliation cannot send again.
const RESEND_UNAVAILABLE: &str = "resend_unavailable";

/// The gateway's reply for an answer that ends the request with an error of the payment, if it is
/// one (`Fail`, `SettleRefused`).
pub(super) fn payment_reply(answer: &Answer, payment: &PaidRequest) -> Option<Reply> {
    Refusal::for_answer(answer, payment.settlement_receipt().as_ref()).map(Reply::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request whose serialisation fails, as a settle request with an unrepresentable field
    /// would.
    struct Unserialisable;

    impl serde::Serialize for Unserialisable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot be written"))
        }
    }

    fn unknown(detail: &str) -> SettleOutcome {
        SettleOutcome::Unknown {
            detail: detail.into(),
        }
    }

    #[test]
    fn an_unknown_settlement_keeps_its_request_for_the_resend() {
        let mut kept = String::new();
        let mut outcome = unknown("settlement_unconfirmed");
        keep_for_resend(
            &serde_json::json!({"x402Version": 2}),
            &mut kept,
            &mut outcome,
        );
        assert_eq!(kept, r#"{"x402Version":2}"#);
        assert_eq!(outcome, unknown("settlement_unconfirmed"));
    }

    #[test]
    fn a_request_that_cannot_be_kept_is_said_in_the_reason_and_stays_pending() {
        let mut kept = String::new();
        let mut outcome = unknown("settlement_unconfirmed");
        keep_for_resend(&Unserialisable, &mut kept, &mut outcome);
        assert!(kept.is_empty(), "nothing to resend: {kept}");
        // Still unknown, so the payment is journaled pending, with the reason an operator reads.
        assert_eq!(
            outcome,
            unknown("settlement_unconfirmed; resend_unavailable")
        );
        let mut outcome = unknown("");
        keep_for_resend(&Unserialisable, &mut kept, &mut outcome);
        assert_eq!(outcome, unknown("resend_unavailable"));
    }

    #[test]
    fn only_an_unknown_outcome_is_kept_for_a_resend() {
        let mut kept = String::new();
        let mut outcome = SettleOutcome::Refused {
            reason: "insufficient_funds".into(),
        };
        keep_for_resend(&Unserialisable, &mut kept, &mut outcome);
        keep_for_resend(&serde_json::json!({}), &mut kept, &mut outcome);
        assert!(kept.is_empty());
        assert_eq!(
            outcome,
            SettleOutcome::Refused {
                reason: "insufficient_funds".into()
            }
        );
    }
}
