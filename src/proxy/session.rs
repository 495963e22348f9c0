//! The money side of one request, in one value: the payment under way (its lifecycle, which takes
//! every decision, its reservation key, receipt and journal entry), the payment identifier the
//! request claimed, and the refusal it got before any payment was admitted.

use super::idempotent::IdempotentRequest;
use super::reply::Reply;
use super::settlement::PaidRequest;
use crate::payment::Outcome;

#[derive(Default)]
pub(super) struct PaymentSession {
    /// The admitted payment; boxed, so that a request without one (and every phase's future,
    /// which Pingora moves whole into a box) does not carry its size.
    pub paid: Option<Box<PaidRequest>>,
    /// The payment identifier this request claimed, finished when the request ends.
    pub identifier: Option<IdempotentRequest>,
    /// The address that signed in with an access grant instead of paying.
    pub signed_in: Option<String>,
    /// How a request refused before any payment was admitted is counted.
    refused_as: Option<Outcome>,
    /// The reply a response phase chose for `fail_to_proxy` to write.
    chosen_reply: Option<Reply>,
    /// The request failed by the gateway's choice (already logged), not by a proxy error.
    chosen_failure: bool,
}

impl PaymentSession {
    /// Counts a request the gateway answers itself (refused, challenged) as `outcome`.
    pub fn count_as(&mut self, outcome: Outcome) {
        self.refused_as = Some(outcome);
    }

    /// How the request is counted: its refusal, or what the payment's lifecycle decided.
    pub fn outcome(&self) -> Option<Outcome> {
        self.refused_as
            .or_else(|| self.paid.as_ref().and_then(|p| p.life.outcome()))
    }

    /// Ends the proxying with `reply` instead of the upstream's answer.
    pub fn fail_with(&mut self, reply: Reply) {
        self.chosen_reply = Some(reply);
        self.chosen_failure = true;
    }

    /// The reply a phase chose, once.
    pub fn take_chosen_reply(&mut self) -> Option<Reply> {
        self.chosen_reply.take()
    }

    /// Whether the request failed by the gateway's own choice (its error is not logged again).
    pub fn failed_by_choice(&self) -> bool {
        self.chosen_failure
    }
}
