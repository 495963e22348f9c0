//! The payment core: checking a decoded payment against the route's configured options, EIP-712
//! signature recovery, the replay guard and the settlement policy.
//!
//! Nothing here talks to the network or knows about Pingora: every decision is a pure function of
//! the configuration, the payment and the clock, so each rule is unit-tested on its own.

pub mod batch;
pub mod claims;
pub mod delivery;
mod echo;
mod eip712;
pub mod idempotency;
pub mod lifecycle;
mod permit2;
pub mod refusal;
mod replay;
pub mod settle_answer;
pub mod sign_in;
mod verify;
pub mod verify_answer;

/// When a route settles is part of its price; the lifecycle reads it.
pub use crate::pricing::{SettlementPolicy, PAYMENT_FLOW};
pub use delivery::{
    holds_answers, is_refund_candidate, settle_point, PaidRequestShape, RequestBody, SettlePoint,
    BODY_CUT, BODY_INCOMPLETE, DEFAULT_SETTLE_BUFFER, MAX_SETTLE_BUFFER,
};
pub use echo::{check_extension_echo, EXTENSION_ECHO_MISMATCH};
pub use eip712::{
    authorization_digest, authorization_signing_hash, recover_signer, SignatureError, TokenDomain,
};
pub use lifecycle::{
    body_charge, is_final_status, metered_charge, reservation_refused, response_charge,
    settlement_override, Answer, ChargeBasis, Decision, Event, Failure, Finality, IdentifierEnd,
    JournalWrite, Lifecycle, Meter, MeteredCharge, Metering, Outcome, PaymentState, Reservation,
    ReservationRefusal, SettleOutcome, Stage, Succession, UsageFallback, UsageHeader, NOTHING_USED,
    SETTLEMENT_OVERRIDES,
};
pub use permit2::{
    check_upto_authorization, upto_challenge_extra, upto_settle_requirements, VerifiedUpto,
    ASSET_TRANSFER_METHOD_KEY, FACILITATOR_ADDRESS_KEY, PERMIT2_ADDRESS, PERMIT2_TRANSFER_METHOD,
    UPTO_PERMIT2_PROXY_ADDRESS,
};
pub use refusal::{
    challenge_status, settlement_header, Receipt, Refusal, PERMIT2_ALLOWANCE_REQUIRED,
};
pub use replay::{InMemoryReplayGuard, ReplayError, ReplayGuard, ReplayKey};
pub use settle_answer::{
    client_reason, judge_settle, AnsweredAmount, ExpectedSettlement, SettleAnswer, SettleReply,
    SettleVerdict,
};
pub use verify::{
    check_authorization, check_payment, find_option, PaymentRejection, VerifiedPayment,
    AGGR_DEFERRED, SESSION_CERT, VALID_BEFORE_MARGIN_SECS,
};
pub use verify_answer::{judge_verify, VerifyReply, VerifyVerdict};
