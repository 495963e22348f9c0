//! Carrying out the lifecycle's decisions: the reservation, the journal line, the `/settle` call
//! and the replies that follow from them. Nothing here decides about money; it does what
//! [`Lifecycle::on`] said.

use super::reply::Reply;
use super::{Gateway, GatewayState};
use crate::facilitator::{
    settle_answer, unconfirmed_receipt, Facilitator, FacilitatorRequest, Judged,
};
use crate::metrics::Metrics;
use crate::ops::journal::{JournalEntry, JournalError};
use crate::payment::{
    body_charge, judge_settle, response_charge, upto_settle_requirements, Answer, ChargeBasis,
    Event, ExpectedSettlement, Failure, JournalWrite, Lifecycle, Metering, PaymentState, Receipt,
    Refusal, Reservation, SettleOutcome, SettlementPolicy, Stage, VerifiedPayment, BODY_CUT,
    SETTLEMENT_OVERRIDES,
};
use crate::x402::{encode_header_json, PaymentRequirements, SettleResponse};
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
    /// The settlement answer, sent as `PAYMENT-RESPONSE` once there is one.
    pub receipt: Option<Receipt>,
    pub transaction: String,
    /// The journal line this payment's events are written from.
    pub entry: Option<JournalEntry>,
    pub route_index: Option<usize>,
    /// The priced item of an MCP route it pays for (metrics per tool).
    pub item_index: Option<usize>,
    /// Set for a metered (`upto`) payment: the charge is read from the response.
    /// Boxed, as is `access`: most payments are neither, and the request carries this value
    /// through every phase.
    pub metered: Option<Box<MeteredTerms>>,
    /// Set on a route with an access window: what settling this payment grants its payer.
    pub access: Option<Box<AccessTerms>>,
    /// Set for a `batch-settlement` payment once its channel is held for this request.
    pub batch: Option<Box<super::batch::ChannelHold>>,
    /// Set when the lifecycle journaled the settled answer as cut (counted as the request ends).
    pub answer_cut: bool,
}

/// The access a settled payment grants: sign-ins to `resource` for `window`.
pub(super) struct AccessTerms {
    /// The route and the canonical path the payment bought.
    pub resource: String,
    pub window: std::time::Duration,
}

/// What the upstream's answer says a metered request used.
pub(super) enum MeterReading<'a> {
    /// From the response head: `Settlement-Overrides` and the route's usage header.
    Head {
        overrides: Option<&'a str>,
        usage: Option<&'a str>,
    },
    /// From the response body: the units read at the route's `usage_json` path (or why they
    /// could not be), and the head's `Settlement-Overrides`, which wins.
    Body {
        overrides: Option<&'a str>,
        used: Result<u128, String>,
    },
}

/// What a metered payment's charge is computed from and settled against.
pub(super) struct MeteredTerms {
    pub metering: Metering,
    /// The matched option's requirements (`amount` is the maximum the buyer signed).
    pub requirements: PaymentRequirements,
    pub decimals: u8,
}

impl PaidRequest {
    /// The settlement answer received for this payment, as the client gets it.
    pub fn settlement_receipt(&self) -> Option<&Receipt> {
        self.receipt.as_ref()
    }

    fn expected(&self) -> ExpectedSettlement<'_> {
        ExpectedSettlement {
            payer: &self.verified.payer,
            network: self.request.network(),
            caip2_network: &self.network,
            amount: self.verified.amount,
        }
    }
}

impl Gateway {
    /// Feeds `event` to the payment's lifecycle and carries out the decision: reservation and
    /// journal (on disk before any reply depends on it); the lifecycle keeps the outcome.
    /// Returns what to answer.
    pub(super) async fn feed(&self, payment: &mut PaidRequest, event: Event) -> Answer {
        let mut decision = payment.life.on(event);
        loop {
            match decision.reservation {
                Reservation::Keep => {}
                // A channel payment's reservation is its hold on the channel: kept charges are
                // committed when it settles, anything else frees the channel uncharged.
                Reservation::Release | Reservation::Tombstone if payment.batch.is_some() => {
                    self.release_channel(payment).await
                }
                Reservation::Burn | Reservation::BurnWithResponse if payment.batch.is_some() => {}
                Reservation::Release => self.replay.release(&payment.verified.replay_key).await,
                // Recorded settled with the kept response when the request ends.
                Reservation::BurnWithResponse => {}
                Reservation::Burn => self.replay.mark_settled(&payment.verified.replay_key).await,
                Reservation::Tombstone => {
                    self.replay.keep_unknown(&payment.verified.replay_key).await
                }
            }
            if decision.grant_access {
                self.grant_access(payment).await;
            }
            if let Some((state, reason)) = &decision.journal {
                payment.answer_cut |= reason == BODY_CUT;
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

    /// Lets a settled payment's payer sign in to what it bought, for the route's window. The
    /// payment stands whatever happens here: a grant that cannot be stored is logged (the payer
    /// pays again next time, which the journal shows).
    async fn grant_access(&self, payment: &PaidRequest) {
        let Some(access) = &payment.access else {
            return;
        };
        let window_ms = i64::try_from(access.window.as_millis()).unwrap_or(i64::MAX);
        let until = crate::time::unix_now_ms().saturating_add(window_ms);
        if let Err(e) = self
            .sign_in
            .grant(&access.resource, &payment.verified.payer, until)
            .await
        {
            tracing::error!(payer = %payment.verified.payer, resource = %access.resource, error = %e, "the access grant of a settled payment could not be stored");
        }
    }

    /// Calls `/settle` once and feeds its judged answer.
    pub(super) async fn settle(&self, state: &GatewayState, payment: &mut PaidRequest) -> Answer {
        if payment.batch.is_some() {
            // Boxed: a channel's settlement is the larger future, and `exact` payments never take it.
            return Box::pin(self.settle_channel(state, payment)).await;
        }
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
        let verdict = judge_settle(&settle_answer(&result), &expected);
        match (&verdict.outcome, &result) {
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
        let mut judged = Judged::new(verdict, result);
        let receipt = match &judged.outcome {
            SettleOutcome::Settled(_) | SettleOutcome::Refused { .. } => judged.receipt.take(),
            SettleOutcome::Unknown { .. } => Some(unconfirmed_receipt(&judged, &expected)),
            SettleOutcome::NotSent(_) => None,
        };
        payment.transaction = judged.transaction.clone();
        payment.receipt = receipt.map(|r| Receipt {
            version: payment.version,
            encoded: encode_header_json(&r),
        });
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

    /// Feeds an upstream that failed to answer (`Event::UpstreamFailed`: unreachable, timed out,
    /// unusable) or broke off its answer's body (`Event::UpstreamBodyCut`): nothing is charged,
    /// or, once settled, the receipt that must go with the error (and a cut answer is journaled).
    pub(super) async fn upstream_failed(
        &self,
        payment: &mut PaidRequest,
        event: Event,
    ) -> Option<Receipt> {
        match self.feed(payment, event).await {
            Answer::UpstreamError { receipt: true } => payment.settlement_receipt().cloned(),
            _ => None,
        }
    }

    /// Feeds a metered payment's final upstream status with the charge `reading` names, then
    /// settles that charge. A payment that is not metered is fed the status alone.
    pub(super) async fn advance_metered(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
        status: u16,
        reading: MeterReading<'_>,
    ) -> Answer {
        let Some(terms) = payment.metered.as_ref() else {
            return self
                .advance(state, payment, Event::UpstreamAnswered { status })
                .await;
        };
        let maximum = payment.verified.amount;
        let (metering, decimals) = (&terms.metering, terms.decimals);
        let charge = match reading {
            MeterReading::Head { overrides, usage } => {
                response_charge(metering, maximum, decimals, overrides, usage)
            }
            MeterReading::Body { overrides, used } => {
                body_charge(metering, maximum, decimals, overrides, used)
            }
        };
        // From the charge on, as settling any payment: a charge of 0 is answered with the
        // receipt the official facilitator gives for one (success, no transaction, amount 0).
        let succeeded = SettlementPolicy::upstream_succeeded(status);
        if succeeded {
            match &charge.basis {
                ChargeBasis::Fallback { fallback, problem } => tracing::warn!(
                    payer = %payment.verified.payer,
                    %problem,
                    fallback = fallback.as_str(),
                    amount = %charge.amount,
                    "metered usage missing or unreadable; the route's fallback is charged"
                ),
                ChargeBasis::Capped => tracing::info!(
                    payer = %payment.verified.payer,
                    maximum = %maximum,
                    "metered usage above the maximum; the maximum is charged"
                ),
                ChargeBasis::Reported => {}
            }
            // From here on the payment is for the charge, not the maximum: the settle request,
            // the amount its answer must name, the journal and the revenue counted.
            if let Some(settle) = upto_settle_requirements(&terms.requirements, &charge) {
                match serde_json::to_value(&settle) {
                    Ok(value) => payment.request.payment_requirements = value,
                    Err(e) => {
                        // Never settle the maximum in place of the charge: charge nothing.
                        tracing::error!(error = %e, "the metered settle requirements cannot be written; nothing is charged");
                        let reason = "settle_request_unwritable".to_string();
                        return self
                            .advance(state, payment, Event::ResultFailed { reason })
                            .await;
                    }
                }
            }
            payment.verified.amount = charge.amount;
            if let Some(entry) = payment.entry.as_mut() {
                entry.amount = charge.amount.to_string();
            }
        }
        let settles = charge.settles();
        let answer = self
            .advance(state, payment, Event::MeteredAnswered { status, charge })
            .await;
        if !settles && matches!(payment.life.stage(), Stage::Settled(_)) {
            let receipt = SettleResponse {
                extra: None,
                success: true,
                error_reason: None,
                error_message: None,
                payer: Some(payment.verified.payer.clone()),
                transaction: String::new(),
                network: payment.network.clone(),
                status: None,
                amount: Some(serde_json::Value::from("0")),
            };
            payment.receipt = Some(Receipt {
                version: payment.version,
                encoded: encode_header_json(&receipt),
            });
        }
        answer
    }

    /// Feeds the upstream's final answer, as its head `head` says, and settles when the lifecycle
    /// says so: a channel payment and a metered one are charged what the head reports
    /// (`Settlement-Overrides`, the route's usage header, removed from the head the client gets),
    /// any other payment its price.
    pub(super) async fn settle_on_head(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
        head: &mut pingora::http::ResponseHeader,
    ) -> Answer {
        let status = head.status.as_u16();
        let header = |name: &str| {
            head.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let overrides = header(SETTLEMENT_OVERRIDES);
        let usage = payment
            .metered
            .as_ref()
            .and_then(|terms| terms.metering.header.as_ref())
            .and_then(|h| header(h.name.as_str()));
        // The seller's instruction to the gateway (on a route that reads it) is never shown to
        // the buyer.
        let reads_overrides = payment.metered.is_some() || payment.batch.is_some();
        if reads_overrides && overrides.is_some() {
            head.remove_header(SETTLEMENT_OVERRIDES);
        }
        if payment.metered.is_some() {
            let reading = MeterReading::Head {
                overrides: overrides.as_deref(),
                usage: usage.as_deref(),
            };
            return self.advance_metered(state, payment, status, reading).await;
        }
        if payment.batch.is_some() {
            // A channel payment may be charged less than its price, as the upstream says.
            return self
                .advance_channel(state, payment, status, overrides.as_deref())
                .await;
        }
        self.advance(state, payment, Event::UpstreamAnswered { status })
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

/// Puts the payment's receipt on the head of an answer the lifecycle said to deliver, readable by
/// browsers too.
pub(super) fn attach_receipt(
    head: &mut pingora::http::ResponseHeader,
    answer: &Answer,
    payment: &PaidRequest,
) -> pingora::Result<()> {
    if let (Answer::Deliver, Some(receipt)) = (answer, payment.settlement_receipt()) {
        head.insert_header(receipt.header_name(), receipt.encoded.as_str())?;
        head.insert_header(
            "Access-Control-Expose-Headers",
            crate::x402::EXPOSED_HEADERS,
        )?;
    }
    Ok(())
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
    Refusal::for_answer(answer, payment.settlement_receipt()).map(Reply::from)
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
