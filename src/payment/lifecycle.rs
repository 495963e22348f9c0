//! The life of one paid request, as a state machine.
//!
//! ```text
//! admitted ─ verified ─┬─ (after-success) upstream < 400 or 101 ─ settling ─┬─ settled(confirmed|pending|batched)
//!    │                 │                  upstream ≥ 400, fails, or ends  ─ not_charged
//!    │                 └─ (before) settling ─ settled ─ upstream answers or fails (receipt always sent)
//!    └─ refused (facilitator said no)                               settling ─┼─ refused (nothing moved)
//!                                                                             └─ unknown (may have moved)
//! ```
//!
//! The proxy feeds [`Event`]s and carries out the [`Decision`] each one returns: what happens to
//! the authorization's reservation, which journal line is written, which outcome is counted and
//! what the client is answered. No decision about money is taken anywhere else.

use super::delivery::{BODY_CUT, BODY_INCOMPLETE};
use super::replay::ReplayError;
use crate::pricing::SettlementPolicy;
pub use crate::pricing::{Meter, Metering, UsageFallback, UsageHeader, UsageJson, UsagePath};
use serde::{Deserialize, Serialize};

/// How final a successful settlement is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// Confirmed on chain (or the facilitator does not distinguish).
    Confirmed,
    /// Broadcast or queued, not confirmed yet: served, journaled pending, reconciled later.
    Pending,
    /// Accepted into a batch the facilitator settles later (no transaction yet).
    Batched,
}

impl Finality {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::Pending => "pending",
            Self::Batched => "batched",
        }
    }
}

/// A payment's state as the journal records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// Checked (and verified by the facilitator where the flow asks for it); the request goes on.
    Verified,
    /// Money moved: `transaction` is the payment id on chain.
    Settled,
    /// Settled or maybe settled, outcome not final; reconciled in the background.
    Pending,
    /// Settlement refused (nothing moved), or reconciliation found it failed.
    Failed,
    /// Verified but never settled (the upstream failed): nothing charged.
    NotCharged,
}

impl PaymentState {
    pub const ALL: [PaymentState; 5] = [
        Self::Verified,
        Self::Settled,
        Self::Pending,
        Self::Failed,
        Self::NotCharged,
    ];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Settled => "settled",
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::NotCharged => "not_charged",
        }
    }

    /// How far a payment has come: under way, open (money may have moved), or concluded.
    pub const fn rank(self) -> u8 {
        match self {
            Self::Verified => 0,
            Self::Pending => 1,
            Self::Settled | Self::Failed | Self::NotCharged => 2,
        }
    }

    /// The order of payment states, written once: what a record in state `next` does to a
    /// payment whose recorded state is `current` (`None`: nothing recorded yet). Every journal
    /// applies it; records can arrive late and out of order (a spooled record drained after the
    /// database is back, two replicas), so a record never moves a payment back:
    ///
    /// - nothing recorded: any record is the payment's state;
    /// - `verified` (a new attempt with the same authorization) only after `not_charged` or
    ///   `failed`: otherwise the authorization is in flight elsewhere, open or settled;
    /// - over `verified`, any later state, unless the record is older than the `verified` one:
    ///   an older record belongs to an earlier attempt with the same authorization;
    /// - `pending` over `pending` (a newer reason or settle request for the same open payment);
    /// - `settled` over `settled` unless older: the same payment with a newer reason (its answer
    ///   failed or was cut after the money moved, a refund candidate);
    /// - otherwise only a higher [`rank`](Self::rank): a concluded payment stays concluded.
    pub const fn succession(current: Option<Self>, next: Self) -> Succession {
        match (current, next) {
            (None, _) => Succession::Replaces,
            (Some(Self::NotCharged | Self::Failed), Self::Verified) => Succession::Replaces,
            (Some(_), Self::Verified) => Succession::Kept,
            (Some(Self::Verified), _) => Succession::ReplacesUnlessOlder,
            (Some(Self::Pending), Self::Pending) => Succession::Replaces,
            (Some(Self::Settled), Self::Settled) => Succession::ReplacesUnlessOlder,
            (Some(current), next) if current.rank() < next.rank() => Succession::Replaces,
            (Some(_), _) => Succession::Kept,
        }
    }

    /// The payment's state once a record in state `next` arrives, by [`succession`](Self::succession);
    /// `next_is_older`: the record's time is before the recorded state's.
    pub const fn after(current: Option<Self>, next: Self, next_is_older: bool) -> Self {
        match (current, Self::succession(current, next)) {
            (Some(current), Succession::Kept) => current,
            (Some(current), Succession::ReplacesUnlessOlder) if next_is_older => current,
            _ => next,
        }
    }
}

/// What a journal record does to the payment's recorded state (see [`PaymentState::succession`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Succession {
    /// The record becomes the payment's state.
    Replaces,
    /// The record becomes the payment's state unless its time is before the recorded state's.
    ReplacesUnlessOlder,
    /// The record is kept in the history only; the payment's state stays.
    Kept,
}

/// What a request came to, as counted per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A free or unmatched route, proxied.
    Free,
    /// 402 with a challenge because no payment was sent.
    Challenged,
    /// The payment was refused (unreadable, not matching, invalid, replayed).
    Refused,
    /// Paid and delivered.
    Paid,
    /// Verified but not charged (upstream failed).
    NotCharged,
    /// Settlement failed or its outcome is unknown; content withheld.
    SettleFailed,
    /// The facilitator or the upstream failed, or the gateway answered an error.
    Error,
    /// An idempotent resend answered with the response kept from its first delivery.
    Replayed,
    /// Served without a new payment to a wallet that signed in with an access grant.
    SignedIn,
    /// A `batch-settlement` channel's uncharged deposit returned at the buyer's request (the
    /// upstream is not called).
    Refunded,
}

impl Outcome {
    pub const ALL: [Outcome; 10] = [
        Self::Free,
        Self::Challenged,
        Self::Refused,
        Self::Paid,
        Self::NotCharged,
        Self::SettleFailed,
        Self::Error,
        Self::Replayed,
        Self::SignedIn,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "free",
            Self::Challenged => "challenged",
            Self::Refused => "refused",
            Self::Paid => "paid",
            Self::NotCharged => "not_charged",
            Self::SettleFailed => "settle_failed",
            Self::Error => "error",
            Self::Replayed => "replayed",
            Self::SignedIn => "signed_in",
            Self::Refunded => "refunded",
        }
    }
}

/// Why a facilitator could not be used, as a client sees it: a code and a fixed message. The
/// facilitator's own words stay in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    FacilitatorTimeout,
    FacilitatorUnavailable,
    FacilitatorError,
    FacilitatorBadResponse,
    FacilitatorCredentials,
    FacilitatorRateLimited,
    /// The settlement was sent and its outcome is not known: the buyer must not pay again.
    SettlementUnconfirmed,
    JournalUnavailable,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Self::FacilitatorTimeout => "facilitator_timeout",
            Self::FacilitatorUnavailable => "facilitator_unavailable",
            Self::FacilitatorError => "facilitator_error",
            Self::FacilitatorBadResponse => "facilitator_bad_response",
            Self::FacilitatorCredentials => "facilitator_credentials",
            Self::FacilitatorRateLimited => "facilitator_rate_limited",
            Self::SettlementUnconfirmed => "settlement_unconfirmed",
            Self::JournalUnavailable => "journal_unavailable",
        }
    }

    /// The only text a client ever reads about a facilitator failure.
    pub fn message(self) -> &'static str {
        match self {
            Self::FacilitatorTimeout => "the payment facilitator did not answer in time; nothing was charged",
            Self::FacilitatorUnavailable => "the payment facilitator cannot be reached; nothing was charged",
            Self::FacilitatorError => "the payment facilitator failed; nothing was charged",
            Self::FacilitatorBadResponse => "the payment facilitator gave an answer the gateway cannot read; nothing was charged",
            Self::FacilitatorCredentials => "the payment facilitator refused the gateway's credentials; the operator has been told",
            Self::FacilitatorRateLimited => "the payment facilitator is busy; retry shortly, nothing was charged",
            Self::SettlementUnconfirmed => "the settlement was sent but is not confirmed: check the transaction in PAYMENT-RESPONSE before paying again",
            Self::JournalUnavailable => "the payment cannot be recorded right now; nothing was charged",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Self::FacilitatorTimeout | Self::SettlementUnconfirmed => 504,
            Self::JournalUnavailable => 503,
            _ => 502,
        }
    }
}

/// What a facilitator's settle answer means for the money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    Settled(Finality),
    /// The facilitator refused: nothing moved. `reason` is a client-safe code.
    Refused {
        reason: String,
    },
    /// The request never reached a facilitator able to act on it: nothing moved.
    NotSent(Failure),
    /// The transfer may or may not land. `detail` is the journal's reason.
    Unknown {
        detail: String,
    },
}

/// What happens to the authorization's reservation in the replay guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    Keep,
    /// Nothing moved: the same authorization may buy a later request.
    Release,
    /// Money moved: the authorization is never accepted again.
    Burn,
    /// Money moved for a payment with an identifier: it is recorded settled together with its
    /// kept response when the request ends (one exchange with a shared store); until then its
    /// reservation keeps refusing other requests.
    BurnWithResponse,
    /// Money may have moved (the settlement's outcome is unknown): a tombstone, refused like a
    /// settled authorization until it expires, but told apart from one so that nobody reads it as
    /// paid. Reconciliation settles the question from the journal's `pending` line.
    Tombstone,
}

/// What the client gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Nothing to do (an informational response, or the request is already answered).
    Nothing,
    /// Call the upstream.
    Forward,
    /// Call the facilitator's `/settle` now, then feed its answer.
    Settle,
    /// Pass the upstream's response on; with the settlement receipt when there is one.
    Deliver,
    /// 402 with a challenge: the facilitator refused the payment.
    Challenge { reason: String },
    /// Another request (on this or another replica) holds the authorization (409), or it was
    /// already used (`settled`: 402 `payment_already_used`).
    Duplicate { settled: bool },
    /// 402 with the facilitator's settle answer as receipt: settlement refused.
    SettleRefused { reason: String },
    /// A gateway error; `receipt` when the settlement answer must go with it.
    Fail { failure: Failure, receipt: bool },
    /// The gateway's own upstream error reply (502/504), with the receipt when money moved.
    UpstreamError { receipt: bool },
}

/// One step's instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub reservation: Reservation,
    /// The journal line to write before answering, with its reason.
    pub journal: Option<(PaymentState, String)>,
    /// The outcome to count, once the request is over.
    pub outcome: Option<Outcome>,
    /// The payment just settled on a route with an access window: its payer may now sign in to
    /// the resource instead of paying again, for the window.
    pub grant_access: bool,
    pub answer: Answer,
}

impl Decision {
    fn new(answer: Answer) -> Self {
        Self {
            reservation: Reservation::Keep,
            journal: None,
            outcome: None,
            grant_access: false,
            answer,
        }
    }
    fn release(mut self) -> Self {
        self.reservation = Reservation::Release;
        self
    }
    fn burn(mut self) -> Self {
        self.reservation = Reservation::Burn;
        self
    }
    fn tombstone(mut self) -> Self {
        self.reservation = Reservation::Tombstone;
        self
    }
    fn journal(mut self, state: PaymentState, reason: &str) -> Self {
        self.journal = Some((state, reason.to_string()));
        self
    }
    fn count(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }
}

/// Where a payment is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Checked locally and reserved in the replay guard.
    Admitted,
    /// Verified and journaled; waiting for the upstream (after-success).
    Verified,
    /// `/settle` is due or under way.
    Settling,
    Settled(Finality),
    /// The facilitator said no: nothing moved.
    Refused,
    /// Nothing charged (the upstream failed, or the request ended before settlement).
    NotCharged,
    /// The settlement may have moved money; journaled pending for reconciliation.
    Unknown,
}

impl Stage {
    /// The stage's name in logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Admitted => "Admitted",
            Self::Verified => "Verified",
            Self::Settling => "Settling",
            Self::Settled(_) => "Settled",
            Self::Refused => "Refused",
            Self::NotCharged => "NotCharged",
            Self::Unknown => "Unknown",
        }
    }

    pub fn finality(&self) -> Option<Finality> {
        match self {
            Self::Settled(f) => Some(*f),
            _ => None,
        }
    }
}

/// What happened, as the proxy tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The payment may go on: the facilitator verified it, or the flow settles up front and the
    /// facilitator's `/settle` verifies.
    Accepted,
    /// The facilitator refused the payment at `/verify`.
    VerifyRefused {
        reason: String,
    },
    /// The facilitator could not be used for `/verify`.
    VerifyFailed(Failure),
    /// The journal could not record the payment: nothing is charged without a record.
    JournalFailed,
    /// A shared journal already holds this authorization: in use elsewhere, or `settled`.
    RecordedElsewhere {
        settled: bool,
    },
    /// The upstream's response header arrived (any status, 1xx included).
    UpstreamAnswered {
        status: u16,
    },
    /// The upstream could not be reached, timed out or dropped the connection.
    UpstreamFailed,
    /// The upstream broke off the body of an answer whose head was fine: before settlement (a
    /// held answer, not charged) or after it (a streamed answer, journaled as cut).
    UpstreamBodyCut,
    /// The upstream answered with a success status, but the answer itself reports that the
    /// work failed (an MCP tool result with `isError`, a JSON-RPC error): nothing is charged.
    ResultFailed {
        reason: String,
    },
    SettleAnswered(SettleOutcome),
    /// A metered (`upto`) payment's upstream answered with its final status, and its response
    /// head was read into `charge`. A failed status charges nothing, as for any payment.
    MeteredAnswered {
        status: u16,
        charge: MeteredCharge,
    },
    /// The request is over (logging); whatever was not concluded is concluded now.
    Ended,
}

/// The journal reason of a metered payment that used nothing: served, and nothing moved.
pub const NOTHING_USED: &str = "nothing_used";

/// Whether an upstream status is final: informational responses (100, 103, …) never count,
/// except `101 Switching Protocols`, which hands the connection over for good.
pub fn is_final_status(status: u16) -> bool {
    !(100..200).contains(&status) || status == 101
}

/// A payment's life: its settlement policy and its stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    policy: SettlementPolicy,
    stage: Stage,
    /// Whether `/settle` was called (or is due): the upstream is never retried after it.
    settle_called: bool,
    /// Settled before the upstream call: every later answer carries the receipt.
    settled_up_front: bool,
    /// The payment carries an identifier this request claimed: its burn waits for the response.
    identified: bool,
    /// The last outcome a decision counted: the request's, once it is over.
    outcome: Option<Outcome>,
    /// The route gives access windows: settling grants the payer access.
    grants_access: bool,
}

/// What became of a journal line a decision asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalWrite {
    Written,
    /// A shared journal already holds this authorization, in `state`: another request (on this or
    /// another replica) is using it, or it was used.
    HeldElsewhere {
        state: PaymentState,
    },
    /// The journal could not be written.
    Failed,
}

impl Lifecycle {
    pub fn new(policy: SettlementPolicy) -> Self {
        Self {
            policy,
            stage: Stage::Admitted,
            settle_called: false,
            settled_up_front: false,
            identified: false,
            outcome: None,
            grants_access: false,
        }
    }

    /// The life of a payment on a route with an access window: the decision that settles it says
    /// so ([`Decision::grant_access`]).
    pub fn granting_access(mut self) -> Self {
        self.grants_access = true;
        self
    }

    /// The life of a payment with an identifier this request claimed: once settled, it is
    /// recorded with its kept response when the request ends ([`Reservation::BurnWithResponse`]).
    pub fn identified(mut self) -> Self {
        self.identified = true;
        self
    }

    /// Feeds what became of the journal line `written` that the last decision asked for.
    /// Returns the decision that replaces it when the write changes the payment's course: only
    /// the `verified` line can, since nothing is charged without it. A later line that cannot be
    /// written changes nothing (money moved or not as decided; the error is logged).
    pub fn journal_answered(
        &mut self,
        written: PaymentState,
        result: JournalWrite,
    ) -> Option<Decision> {
        if written != PaymentState::Verified {
            return None;
        }
        match result {
            JournalWrite::Written => None,
            JournalWrite::HeldElsewhere { state } => Some(self.on(Event::RecordedElsewhere {
                settled: state != PaymentState::Verified,
            })),
            JournalWrite::Failed => Some(self.on(Event::JournalFailed)),
        }
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    /// The outcome the decisions so far counted (the last one wins): what the request is counted
    /// as when it ends. `None` until a decision counts one.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    pub fn policy(&self) -> SettlementPolicy {
        self.policy
    }

    /// Whether `/settle` was called (or is due): the upstream is never retried after it.
    pub fn settle_attempted(&self) -> bool {
        self.settle_called
    }

    /// What becomes of this payment's identifier claim now that its request is over;
    /// `delivered_whole` says whether the response reached the client complete.
    pub fn identifier_end(&self, delivered_whole: bool) -> IdentifierEnd {
        match (&self.stage, delivered_whole) {
            (Stage::Settled(_), true) => IdentifierEnd::KeepResponse,
            (Stage::Settled(_), false) => IdentifierEnd::SettledWithoutResponse,
            (Stage::Unknown | Stage::Settling, _) => IdentifierEnd::HoldUntilExpiry,
            (Stage::Admitted | Stage::Verified | Stage::Refused | Stage::NotCharged, _) => {
                IdentifierEnd::Abandon
            }
        }
    }

    /// Feeds `event`; returns what to do.
    pub fn on(&mut self, event: Event) -> Decision {
        use Answer as A;
        use Event as E;
        use Stage as S;
        let before = self.policy == SettlementPolicy::Before;
        // A metered answer differs from any other only where it is settled: a success of a
        // verified payment. Anywhere else it is the plain status.
        let event = match event {
            E::MeteredAnswered { status, .. }
                if !(self.stage == S::Verified
                    && is_final_status(status)
                    && SettlementPolicy::upstream_succeeded(status)) =>
            {
                E::UpstreamAnswered { status }
            }
            other => other,
        };
        let (next, decision) = match (&self.stage, event) {
            // 100 Continue, 103 Early Hints: the final answer is still to come.
            (stage, E::UpstreamAnswered { status }) if !is_final_status(status) => {
                (stage.clone(), Decision::new(A::Nothing))
            }
            (S::Admitted, E::Accepted) if before => (
                S::Settling,
                Decision::new(A::Settle).journal(PaymentState::Verified, ""),
            ),
            (S::Admitted, E::Accepted) => (
                S::Verified,
                Decision::new(A::Forward).journal(PaymentState::Verified, ""),
            ),
            (S::Admitted, E::VerifyRefused { reason }) => (
                S::Refused,
                Decision::new(A::Challenge { reason })
                    .release()
                    .count(Outcome::Refused),
            ),
            (S::Admitted, E::VerifyFailed(failure)) => (
                S::NotCharged,
                Decision::new(A::Fail {
                    failure,
                    receipt: false,
                })
                .release()
                .count(Outcome::Error),
            ),
            (S::Admitted, _) => (
                S::NotCharged,
                Decision::new(A::Nothing).release().count(Outcome::Error),
            ),

            // The `verified` line could not be written (before or after-success alike).
            (S::Verified | S::Settling, E::JournalFailed) => (
                S::NotCharged,
                Decision::new(A::Fail {
                    failure: Failure::JournalUnavailable,
                    receipt: false,
                })
                .release()
                .count(Outcome::Error),
            ),

            // The authorization stays with whoever recorded it first. In flight elsewhere: our own
            // reservation goes (that request may yet fail and free it). Settled or pending there:
            // ours is kept as settled, so the next copy is refused by the replay guard without
            // another facilitator call (a replay guard that lost its state, e.g. an emptied Redis,
            // learns it back from the journal one authorization at a time).
            (S::Verified | S::Settling, E::RecordedElsewhere { settled }) => {
                let refused = Decision::new(A::Duplicate { settled }).count(Outcome::Refused);
                (
                    S::Refused,
                    if settled {
                        refused.burn()
                    } else {
                        refused.release()
                    },
                )
            }

            // Metered: settle the charge; a charge of 0 moves nothing and needs no `/settle`,
            // but the authorization is burned all the same (Permit2 would still honour it).
            (S::Verified, E::MeteredAnswered { charge, .. }) => {
                if charge.settles() {
                    (S::Settling, Decision::new(A::Settle))
                } else {
                    (
                        S::Settled(Finality::Confirmed),
                        Decision::new(A::Deliver)
                            .burn()
                            .journal(PaymentState::Settled, NOTHING_USED)
                            .count(Outcome::Paid),
                    )
                }
            }
            (S::Verified, E::UpstreamAnswered { status })
                if SettlementPolicy::upstream_succeeded(status) =>
            {
                (S::Settling, Decision::new(A::Settle))
            }
            (S::Verified, E::UpstreamAnswered { status }) => (
                S::NotCharged,
                Decision::new(A::Deliver)
                    .release()
                    .journal(
                        PaymentState::NotCharged,
                        &format!("upstream_status_{status}"),
                    )
                    .count(Outcome::NotCharged),
            ),
            (S::Verified, E::ResultFailed { reason }) => (
                S::NotCharged,
                Decision::new(A::Deliver)
                    .release()
                    .journal(PaymentState::NotCharged, &reason)
                    .count(Outcome::NotCharged),
            ),
            (S::Verified, E::UpstreamFailed) => (
                S::NotCharged,
                Decision::new(A::UpstreamError { receipt: false })
                    .release()
                    .journal(PaymentState::NotCharged, "upstream_failed")
                    .count(Outcome::NotCharged),
            ),
            // A held answer broke off before it was whole: nothing was delivered, nothing is
            // charged, and the authorization may buy a retry.
            (S::Verified, E::UpstreamBodyCut) => (
                S::NotCharged,
                Decision::new(A::UpstreamError { receipt: false })
                    .release()
                    .journal(PaymentState::NotCharged, BODY_INCOMPLETE)
                    .count(Outcome::NotCharged),
            ),
            (S::Verified, _) => (
                S::NotCharged,
                Decision::new(A::Nothing)
                    .release()
                    .journal(PaymentState::NotCharged, "")
                    .count(Outcome::NotCharged),
            ),

            (S::Settling, E::SettleAnswered(SettleOutcome::Settled(finality))) => {
                let state = match finality {
                    Finality::Confirmed => PaymentState::Settled,
                    Finality::Pending | Finality::Batched => PaymentState::Pending,
                };
                self.settled_up_front = before;
                let answer = if before { A::Forward } else { A::Deliver };
                (
                    S::Settled(finality),
                    Decision::new(answer)
                        .burn()
                        .journal(state, "")
                        .count(Outcome::Paid),
                )
            }
            (S::Settling, E::SettleAnswered(SettleOutcome::Refused { reason })) => (
                S::Refused,
                Decision::new(A::SettleRefused {
                    reason: reason.clone(),
                })
                .release()
                .journal(PaymentState::Failed, &reason)
                .count(Outcome::SettleFailed),
            ),
            (S::Settling, E::SettleAnswered(SettleOutcome::NotSent(failure))) => (
                S::Refused,
                Decision::new(A::Fail {
                    failure,
                    receipt: false,
                })
                .release()
                .journal(PaymentState::Failed, failure.code())
                .count(Outcome::SettleFailed),
            ),
            (S::Settling, E::SettleAnswered(SettleOutcome::Unknown { detail })) => (
                S::Unknown,
                Decision::new(A::Fail {
                    failure: Failure::SettlementUnconfirmed,
                    receipt: true,
                })
                .tombstone()
                .journal(PaymentState::Pending, &detail)
                .count(Outcome::SettleFailed),
            ),
            // Settlement was due but the request ended before an answer came back: the call
            // may have gone out, so the authorization is never accepted again.
            (S::Settling, _) => (
                S::Unknown,
                Decision::new(A::Nothing)
                    .tombstone()
                    .journal(PaymentState::Pending, "settlement_interrupted")
                    .count(Outcome::SettleFailed),
            ),

            // Settled up front: whatever the upstream does, the receipt goes with the answer, and
            // an upstream failure is journaled on the settled payment for an operator to refund.
            (S::Settled(f), E::UpstreamAnswered { status }) if self.settled_up_front => {
                let f = *f;
                let decision = if SettlementPolicy::upstream_succeeded(status) {
                    Decision::new(A::Deliver)
                } else {
                    Decision::new(A::Deliver)
                        .journal(settled_state(f), &format!("upstream_status_{status}"))
                };
                (S::Settled(f), decision)
            }
            (S::Settled(f), E::ResultFailed { reason }) if self.settled_up_front => {
                let f = *f;
                (
                    S::Settled(f),
                    Decision::new(A::Deliver).journal(settled_state(f), &reason),
                )
            }
            (S::Settled(f), E::UpstreamFailed | E::UpstreamBodyCut) if self.settled_up_front => {
                let f = *f;
                (
                    S::Settled(f),
                    Decision::new(A::UpstreamError { receipt: true })
                        .journal(settled_state(f), "upstream_failed"),
                )
            }
            (S::Settled(f), E::UpstreamAnswered { .. }) => {
                (S::Settled(*f), Decision::new(A::Deliver))
            }
            // A streamed answer, settled on its head, broke off: the buyer paid for an answer
            // it did not get whole. Journaled on the settled payment for an operator to refund.
            (S::Settled(f), E::UpstreamBodyCut) => {
                let f = *f;
                (
                    S::Settled(f),
                    Decision::new(A::UpstreamError { receipt: true })
                        .journal(settled_state(f), BODY_CUT),
                )
            }
            // The settled response failed on its way out: money moved, the receipt was sent
            // with the header (after-success) or goes with the error (before).
            (S::Settled(f), E::UpstreamFailed) => (
                S::Settled(*f),
                Decision::new(A::UpstreamError { receipt: true }),
            ),
            (stage @ (S::Settled(_) | S::Refused | S::NotCharged | S::Unknown), _) => {
                (stage.clone(), Decision::new(A::Nothing))
            }
        };
        self.settle_called |= decision.answer == Answer::Settle;
        let settles_now = matches!(next, S::Settled(_)) && !matches!(self.stage, S::Settled(_));
        let decision = Decision {
            grant_access: self.grants_access && settles_now,
            ..decision
        };
        self.stage = next;
        if decision.outcome.is_some() {
            self.outcome = decision.outcome;
        }
        if self.identified && decision.reservation == Reservation::Burn {
            return Decision {
                reservation: Reservation::BurnWithResponse,
                ..decision
            };
        }
        decision
    }
}

/// What becomes of a payment identifier's claim when its request ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierEnd {
    /// Settled and delivered whole: recorded settled with the response a resend gets.
    KeepResponse,
    /// Settled but not delivered whole: recorded settled; resends stay refused (in flight)
    /// until the claim expires, since there is no whole response to give them.
    SettledWithoutResponse,
    /// The settlement's outcome is not known: the claim stays in flight until it expires.
    HoldUntilExpiry,
    /// Nothing was charged: the identifier may buy a later request.
    Abandon,
}

/// How a paid request whose authorization could not be reserved is answered. The reservation is
/// taken before the lifecycle starts (nothing is owed yet), but what its refusal means is decided
/// here with every other money decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationRefusal {
    pub outcome: Outcome,
    /// The code the client and the facilitator metrics read.
    pub code: &'static str,
    pub status: u16,
    /// Answered with the route's challenge: this authorization is spent, a new one is needed.
    pub challenge: bool,
    /// Counted as a refused replay (a store that cannot be reached is not one).
    pub replay: bool,
    /// The store could not tell: a retry may succeed (`Retry-After`).
    pub retry: bool,
}

/// What a refused reservation comes to. A store that cannot be reached fails closed: nobody can
/// tell whether the authorization is free, so the request goes no further.
pub fn reservation_refused(error: &ReplayError) -> ReservationRefusal {
    let refused = |code, status, challenge| ReservationRefusal {
        outcome: Outcome::Refused,
        code,
        status,
        challenge,
        replay: true,
        retry: false,
    };
    match error {
        ReplayError::Unavailable => ReservationRefusal {
            outcome: Outcome::Error,
            code: "replay_store_unavailable",
            status: 503,
            challenge: false,
            replay: false,
            retry: true,
        },
        ReplayError::InFlight => refused("payment_in_progress", 409, false),
        ReplayError::AlreadySettled | ReplayError::OutcomeUnknown => {
            refused("payment_already_used", 402, true)
        }
    }
}

fn settled_state(finality: Finality) -> PaymentState {
    match finality {
        Finality::Confirmed => PaymentState::Settled,
        Finality::Pending | Finality::Batched => PaymentState::Pending,
    }
}

/// Why a metered charge is what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeBasis {
    /// What the upstream reported, within the maximum.
    Reported,
    /// The upstream reported more than the maximum: the maximum is charged.
    Capped,
    /// The report was missing or unreadable (`problem` says which); the route's fallback applies.
    Fallback {
        fallback: UsageFallback,
        problem: String,
    },
}

/// The amount a metered request settles: never more than the buyer's maximum; `0` settles nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredCharge {
    pub amount: u128,
    pub basis: ChargeBasis,
}

impl MeteredCharge {
    /// Whether a settlement is to be sent at all (a zero charge moves nothing on chain).
    pub fn settles(&self) -> bool {
        self.amount > 0
    }
}

/// A report is a plain non-negative decimal integer (surrounding spaces allowed).
fn parse_report(text: &str) -> Result<u128, String> {
    let digits = text.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "usage `{}` is not a non-negative integer",
            digits.escape_debug()
        ));
    }
    digits
        .parse()
        .map_err(|_| format!("usage `{digits}` is out of range"))
}

/// What a metered request is charged: `min(reported × unit, maximum)`, or the fallback when
/// `reported` (the upstream's header or trailer value) is absent or malformed.
pub fn metered_charge(
    meter: Meter,
    maximum: u128,
    fallback: UsageFallback,
    reported: Option<&str>,
) -> MeteredCharge {
    let parsed = match reported {
        None => Err("the upstream reported no usage".to_string()),
        Some(text) => parse_report(text),
    };
    charge_for(meter, maximum, fallback, parsed)
}

/// `min(used × unit, maximum)`, or the fallback when the usage could not be read (`problem`).
fn charge_for(
    meter: Meter,
    maximum: u128,
    fallback: UsageFallback,
    used: Result<u128, String>,
) -> MeteredCharge {
    let used = match used {
        Ok(used) => used,
        Err(problem) => return fallback_charge(fallback, maximum, problem),
    };
    // An overflowing product is certainly above any maximum.
    let owed = match meter {
        Meter::PerUnit { unit_amount } => used.checked_mul(unit_amount),
        Meter::Absolute => Some(used),
    };
    match owed {
        Some(amount) if amount <= maximum => MeteredCharge {
            amount,
            basis: ChargeBasis::Reported,
        },
        _ => MeteredCharge {
            amount: maximum,
            basis: ChargeBasis::Capped,
        },
    }
}

fn fallback_charge(fallback: UsageFallback, maximum: u128, problem: String) -> MeteredCharge {
    let amount = match fallback {
        UsageFallback::Maximum => maximum,
        UsageFallback::Nothing => 0,
    };
    MeteredCharge {
        amount,
        basis: ChargeBasis::Fallback { fallback, problem },
    }
}

/// The response header through which a seller's handler names the amount to settle, as the
/// official x402 middleware reads it: JSON `{"amount": "<atomic>" | "NN%" | "$x.xx"}`. It is
/// removed before the client sees the response.
pub const SETTLEMENT_OVERRIDES: &str = "settlement-overrides";

/// Reads a `Settlement-Overrides` value into atomic units, as the official middleware does: an
/// atomic integer, a percentage of `maximum` with at most two decimals (rounded down), or a
/// dollar amount in the asset's `decimals` (any precision beyond them is dropped).
pub fn settlement_override(text: &str, maximum: u128, decimals: u8) -> Result<u128, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| format!("Settlement-Overrides `{}` is not JSON", text.escape_debug()))?;
    let amount = match value.get("amount") {
        Some(serde_json::Value::String(amount)) => amount.as_str(),
        _ => {
            return Err(format!(
                "Settlement-Overrides `{}` has no string `amount`",
                text.escape_debug()
            ))
        }
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unreadable = || {
        format!("Settlement-Overrides amount `{}` is not an atomic amount, a percentage or a dollar amount", amount.escape_debug())
    };
    let out_of_range = || {
        format!(
            "Settlement-Overrides amount `{}` is out of range",
            amount.escape_debug()
        )
    };
    if let Some(percent) = amount.strip_suffix('%') {
        let (whole, fraction) = percent.split_once('.').unwrap_or((percent, ""));
        if !digits(whole) || fraction.len() > 2 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unreadable());
        }
        let whole: u128 = whole.parse().map_err(|_| out_of_range())?;
        let hundredths: u128 = format!("{fraction:0<2}")
            .parse()
            .map_err(|_| unreadable())?;
        let scaled = whole
            .checked_mul(100)
            .and_then(|w| w.checked_add(hundredths))
            .ok_or_else(out_of_range)?;
        return maximum
            .checked_mul(scaled)
            .map(|n| n / 10_000)
            .ok_or_else(out_of_range);
    }
    if let Some(dollars) = amount.strip_prefix('$') {
        let (whole, fraction) = dollars.split_once('.').unwrap_or((dollars, ""));
        if !digits(whole) || (dollars.contains('.') && !digits(fraction)) {
            return Err(unreadable());
        }
        let kept: String = fraction.chars().take(decimals as usize).collect();
        let scale = 10u128
            .checked_pow(u32::from(decimals))
            .ok_or_else(out_of_range)?;
        let whole: u128 = whole.parse().map_err(|_| out_of_range())?;
        let fraction: u128 = if decimals == 0 {
            0
        } else {
            format!("{kept:0<width$}", width = decimals as usize)
                .parse()
                .map_err(|_| out_of_range())?
        };
        return whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(fraction))
            .ok_or_else(out_of_range);
    }
    if !digits(amount) {
        return Err(unreadable());
    }
    amount.parse().map_err(|_| out_of_range())
}

/// What the upstream's response head says a metered request costs, read from the two header
/// values the route looks at: `Settlement-Overrides` wins when present; otherwise the route's own
/// usage header (`usage`), if it has one. Never more than `maximum`; the route's fallback when
/// the report is missing or unreadable.
pub fn response_charge(
    metering: &Metering,
    maximum: u128,
    decimals: u8,
    overrides: Option<&str>,
    usage: Option<&str>,
) -> MeteredCharge {
    if let Some(text) = overrides {
        return override_charge(metering, maximum, decimals, text);
    }
    match &metering.header {
        Some(header) => metered_charge(header.meter, maximum, metering.fallback, usage),
        None => fallback_charge(
            metering.fallback,
            maximum,
            "the upstream sent no Settlement-Overrides".to_string(),
        ),
    }
}

/// What a metered request whose usage is read from the response body costs: `Settlement-Overrides`
/// in the head still wins; otherwise `used` (the units read at the route's `usage_json` path, or
/// why they could not be read) × the unit price, never more than `maximum`; the route's fallback
/// when the usage could not be read.
pub fn body_charge(
    metering: &Metering,
    maximum: u128,
    decimals: u8,
    overrides: Option<&str>,
    used: Result<u128, String>,
) -> MeteredCharge {
    if let Some(text) = overrides {
        return override_charge(metering, maximum, decimals, text);
    }
    match &metering.body {
        Some(body) => charge_for(
            Meter::PerUnit {
                unit_amount: body.unit_amount,
            },
            maximum,
            metering.fallback,
            used,
        ),
        None => fallback_charge(
            metering.fallback,
            maximum,
            "the route reads no usage from the response body".to_string(),
        ),
    }
}

/// The charge a `Settlement-Overrides` value names, capped at `maximum`; the fallback when it
/// cannot be read.
fn override_charge(metering: &Metering, maximum: u128, decimals: u8, text: &str) -> MeteredCharge {
    match settlement_override(text, maximum, decimals) {
        Ok(amount) if amount <= maximum => MeteredCharge {
            amount,
            basis: ChargeBasis::Reported,
        },
        Ok(_) => MeteredCharge {
            amount: maximum,
            basis: ChargeBasis::Capped,
        },
        Err(problem) => fallback_charge(metering.fallback, maximum, problem),
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
pub(crate) mod tests;
