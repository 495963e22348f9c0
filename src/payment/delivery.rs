//! When a paid answer is settled: once its body is whole (the answer is *held*), or on its head
//! (the answer *streams*).
//!
//! An after-success payment is charged for a whole answer. An answer of known length
//! (`Content-Length`) up to the route's bound (`settle_buffer`, [`DEFAULT_SETTLE_BUFFER`]) is
//! received whole before it is settled, and nothing of it reaches the client until then: a body
//! the upstream breaks off is not charged ([`BODY_INCOMPLETE`]). Anything else (an event stream,
//! a chunked answer without a length, one longer than the bound) is settled on its head so that
//! it can stream; a stream the upstream breaks off after that is journaled on the settled payment
//! ([`BODY_CUT`]) for an operator to refund. Payments settled before the upstream call are not
//! concerned: they are settled before anything is sent on.
//!
//! Pure decisions from what the request and the answer's head say; the proxy moves the bytes.

use super::PaymentState;
use crate::pricing::SettlementPolicy;

/// The default bound of a held answer (`[server] settle_buffer`): 1 MiB.
pub const DEFAULT_SETTLE_BUFFER: u64 = 1024 * 1024;

/// The largest bound a configuration may set: what one request may hold in memory.
pub const MAX_SETTLE_BUFFER: u64 = 64 * 1024 * 1024;

/// The journal reason, and the client's error code, of a held answer whose body the upstream
/// broke off before its declared end: nothing is charged.
pub const BODY_INCOMPLETE: &str = "upstream_body_incomplete";

/// The journal reason on a settled payment whose streamed answer the upstream broke off after
/// the settlement: the buyer paid for an answer it did not get whole, a refund candidate.
pub const BODY_CUT: &str = "upstream_body_cut";

/// Whether a payment in journal `state` with `reason` is a refund candidate: the money moved (or
/// may have) and its answer did not reach the buyer whole: a stream cut after settlement, or,
/// settled up front, an upstream that failed or answered an error.
pub fn is_refund_candidate(state: PaymentState, reason: &str) -> bool {
    matches!(state, PaymentState::Settled | PaymentState::Pending)
        && (reason == BODY_CUT
            || reason == "upstream_failed"
            || reason.starts_with("upstream_status_"))
}

/// What a paid request's own body looks like before it is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    None,
    /// A body of this declared length.
    Length(u64),
    /// A body without a declared length (chunked): it cannot be read ahead and sent on.
    Unframed,
}

/// What the gateway knows of a paid request when it chooses how to carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaidRequestShape {
    pub policy: SettlementPolicy,
    /// `settle_buffer` for the route (0: never held).
    pub bound: u64,
    /// A `HEAD` request: its answer has no body to wait for.
    pub head_only: bool,
    /// The request asks for a protocol switch (`Upgrade`): the tunnel is settled on its `101`.
    pub upgrade: bool,
    pub body: RequestBody,
    /// The largest request body the gateway reads ahead to carry the request itself.
    pub body_limit: u64,
}

/// Whether the gateway carries a paid request itself, so that an answer of known length up to
/// the bound can be held until it is whole and settled. Otherwise it is proxied and settled on the
/// answer's head, as a stream.
pub fn holds_answers(request: &PaidRequestShape) -> bool {
    let body_fits = match request.body {
        RequestBody::None => true,
        RequestBody::Length(length) => length <= request.body_limit,
        RequestBody::Unframed => false,
    };
    request.policy == SettlementPolicy::AfterSuccess
        && request.bound > 0
        && !request.head_only
        && !request.upgrade
        && body_fits
}

/// When an answer the gateway carries is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlePoint {
    /// Received whole (`length` bytes) first; a body broken off before that is not charged.
    WholeBody { length: u64 },
    /// On its head: it streams (or the lifecycle charges nothing for its status).
    Head,
}

/// When an answer whose head says `status`, `content_length` and `content_type` is settled,
/// with `bound` the route's `settle_buffer`. Only a success with a body of declared length up to
/// the bound is held; an event stream is never held, whatever its length.
pub fn settle_point(
    bound: u64,
    status: u16,
    content_length: Option<&str>,
    content_type: &str,
) -> SettlePoint {
    // Nothing is charged for an error status, and 204 and 304 have no body to wait for.
    if !SettlementPolicy::upstream_succeeded(status) || status == 204 || status == 304 {
        return SettlePoint::Head;
    }
    if content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("text/event-stream")
    {
        return SettlePoint::Head;
    }
    let Some(text) = content_length.map(str::trim) else {
        return SettlePoint::Head;
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return SettlePoint::Head;
    }
    match text.parse::<u64>() {
        Ok(length) if bound > 0 && length <= bound => SettlePoint::WholeBody { length },
        _ => SettlePoint::Head,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> PaidRequestShape {
        PaidRequestShape {
            policy: SettlementPolicy::AfterSuccess,
            bound: DEFAULT_SETTLE_BUFFER,
            head_only: false,
            upgrade: false,
            body: RequestBody::None,
            body_limit: 65536,
        }
    }

    #[test]
    fn a_paid_request_after_success_is_carried_to_hold_its_answer() {
        assert!(holds_answers(&shape()));
        let small_body = PaidRequestShape {
            body: RequestBody::Length(65536),
            ..shape()
        };
        assert!(holds_answers(&small_body));
    }

    #[test]
    fn what_cannot_be_held_is_proxied_and_settled_on_the_head() {
        let not = |s: PaidRequestShape| assert!(!holds_answers(&s), "{s:?}");
        // Settled before the upstream call: nothing waits for the answer.
        not(PaidRequestShape {
            policy: SettlementPolicy::Before,
            ..shape()
        });
        // Buffering turned off.
        not(PaidRequestShape {
            bound: 0,
            ..shape()
        });
        not(PaidRequestShape {
            head_only: true,
            ..shape()
        });
        not(PaidRequestShape {
            upgrade: true,
            ..shape()
        });
        // A request body that cannot be read ahead of sending it on.
        not(PaidRequestShape {
            body: RequestBody::Length(65537),
            ..shape()
        });
        not(PaidRequestShape {
            body: RequestBody::Unframed,
            ..shape()
        });
    }

    #[test]
    fn a_success_of_known_length_within_the_bound_is_settled_once_whole() {
        let json = "application/json";
        assert_eq!(
            settle_point(1024, 200, Some("100000"), json),
            SettlePoint::Head,
            "longer than the bound: streamed"
        );
        assert_eq!(
            settle_point(100_000, 200, Some("100000"), json),
            SettlePoint::WholeBody { length: 100_000 }
        );
        assert_eq!(
            settle_point(1024, 201, Some(" 0 "), json),
            SettlePoint::WholeBody { length: 0 }
        );
        assert_eq!(
            settle_point(1024, 302, Some("12"), "text/html"),
            SettlePoint::WholeBody { length: 12 }
        );
    }

    #[test]
    fn streams_errors_and_unknown_lengths_are_settled_on_the_head() {
        let json = "application/json";
        for (bound, status, length, content_type) in [
            (1024, 200, None, json),
            (1024, 200, Some("12"), "text/event-stream"),
            (1024, 200, Some("12"), "Text/Event-Stream; charset=utf-8"),
            (1024, 200, Some("12, 12"), json),
            (1024, 200, Some("-1"), json),
            (1024, 200, Some(""), json),
            (1024, 200, Some("99999999999999999999999"), json),
            (1024, 204, Some("0"), json),
            (1024, 304, Some("12"), json),
            (1024, 404, Some("12"), json),
            (1024, 500, Some("12"), json),
            (0, 200, Some("12"), json),
        ] {
            assert_eq!(
                settle_point(bound, status, length, content_type),
                SettlePoint::Head,
                "{bound} {status} {length:?} {content_type}"
            );
        }
    }

    #[test]
    fn refund_candidates_are_settled_payments_whose_answer_failed() {
        use PaymentState as S;
        assert!(is_refund_candidate(S::Settled, BODY_CUT));
        assert!(is_refund_candidate(S::Pending, BODY_CUT));
        assert!(is_refund_candidate(S::Settled, "upstream_failed"));
        assert!(is_refund_candidate(S::Settled, "upstream_status_500"));
        assert!(!is_refund_candidate(S::Settled, ""));
        assert!(!is_refund_candidate(S::Settled, "nothing_used"));
        // Nothing moved: nothing to refund.
        assert!(!is_refund_candidate(S::NotCharged, BODY_INCOMPLETE));
        assert!(!is_refund_candidate(S::NotCharged, "upstream_status_500"));
        assert!(!is_refund_candidate(S::Failed, BODY_CUT));
    }
}
