//! The request path of idempotent retries: claim the payment's identifier before verify, capture
//! the delivered response, and keep it (or give the claim up) when the request ends.

use super::{Gateway, Reply, RequestCtx};
use crate::config::IdempotencyConfig;
use crate::payment::claims::{Delivered, IdentifierClaim};
use crate::payment::idempotency::{
    fingerprint, held_claim, invalid_identifier, lost_response, payment_identifier, Claim,
    Completed, HeldClaim, StoredResponse,
};
use crate::payment::{IdentifierEnd, Outcome as RequestOutcome, Stage};
use pingora::http::ResponseHeader;
use serde_json::Value;

/// A payment whose identifier this request claimed.
pub(super) struct IdempotentRequest {
    id: String,
    fingerprint: String,
    capture: Option<Capture>,
}

/// The response being delivered, as the buyer receives it.
struct Capture {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    too_large: bool,
    complete: bool,
}

/// Headers that describe one connection or one framing, not the response.
const NOT_KEPT: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "date",
];

/// The identifier `payload` carries, if any, bound to this exact payload and request. `Err` is
/// the refusal of a malformed identifier.
pub(super) fn read_identifier(
    settings: IdempotencyConfig,
    payload: &Value,
    method: &str,
    target: &str,
) -> Result<Option<IdentifierClaim>, (RequestOutcome, Reply)> {
    match payment_identifier(payload) {
        Ok(None) => Ok(None),
        Ok(Some(id)) => Ok(Some(IdentifierClaim {
            id,
            fingerprint: fingerprint(method, target, payload),
            ttl: settings.ttl,
        })),
        Err(message) => Err((
            RequestOutcome::Refused,
            Reply::from(invalid_identifier(&message)),
        )),
    }
}

impl IdempotentRequest {
    /// The request that claimed `claim` and finishes it.
    pub(super) fn new(claim: IdentifierClaim) -> Self {
        Self {
            id: claim.id,
            fingerprint: claim.fingerprint,
            capture: None,
        }
    }
}

/// The reply to a payment whose identifier is held: a refusal, or the response kept from the
/// first delivery, with the request's outcome. `None` for a fresh claim.
pub(super) fn held_identifier_reply(claim: Claim) -> Option<(RequestOutcome, Reply)> {
    match held_claim(claim) {
        HeldClaim::Fresh => None,
        HeldClaim::Refused { refusal, outcome } => Some((outcome, Reply::from(refusal))),
        HeldClaim::Replay {
            status,
            headers,
            body,
        } => Some((
            RequestOutcome::Replayed,
            Reply::stored(status, headers, body),
        )),
        HeldClaim::Unreadable(e) => {
            tracing::error!(error = %e, "a kept response cannot be replayed");
            Some((RequestOutcome::Error, Reply::from(lost_response())))
        }
    }
}

impl Gateway {
    /// Claims `identifier` on its own (for a payment refused before its other claims, so that a
    /// resend of a delivered payment still gets its response back). `Err` is the reply to send.
    pub(super) async fn claim_identifier(
        &self,
        identifier: IdentifierClaim,
    ) -> Result<IdempotentRequest, (RequestOutcome, Reply)> {
        let claim = self
            .idempotency
            .claim(&identifier.id, &identifier.fingerprint, identifier.ttl)
            .await
            .map_err(|e| {
                (
                    RequestOutcome::Error,
                    Reply::unavailable(
                        "replay_store_unavailable",
                        &format!("{e}; nothing was charged"),
                    ),
                )
            })?;
        match held_identifier_reply(claim) {
            Some(refused) => Err(refused),
            None => Ok(IdempotentRequest::new(identifier)),
        }
    }
}

/// Starts keeping the response of a settled idempotent payment, headers included.
pub(super) fn capture_head(ctx: &mut RequestCtx, response: &ResponseHeader) {
    let settled = ctx
        .session
        .paid
        .as_ref()
        .is_some_and(|p| matches!(p.life.stage(), Stage::Settled(_)));
    let Some(request) = ctx.session.identifier.as_mut().filter(|_| settled) else {
        return;
    };
    let headers = response
        .headers
        .iter()
        .filter(|(name, _)| !NOT_KEPT.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect();
    request.capture = Some(Capture {
        status: response.status.as_u16(),
        headers,
        body: Vec::new(),
        too_large: false,
        complete: false,
    });
}

/// Appends a body chunk, up to the configured size.
pub(super) fn capture_body(ctx: &mut RequestCtx, chunk: Option<&bytes::Bytes>, end: bool) {
    let limit = ctx.state.config.idempotency.max_body_bytes;
    let Some(capture) = ctx
        .session
        .identifier
        .as_mut()
        .and_then(|r| r.capture.as_mut())
    else {
        return;
    };
    if let Some(chunk) = chunk {
        if !capture.too_large && capture.body.len() + chunk.len() <= limit {
            capture.body.extend_from_slice(chunk);
        } else {
            capture.too_large = true;
            capture.body = Vec::new();
        }
    }
    capture.complete |= end;
}

impl Gateway {
    /// At the end of the request: record a settled payment as settled, with its delivered
    /// response (one exchange), or give the claim up when nothing was charged. An unknown
    /// outcome keeps the claim in flight until it expires.
    pub(super) async fn finish_identifier(&self, ctx: &mut RequestCtx) {
        let Some(request) = ctx.session.identifier.take() else {
            return;
        };
        let settings = ctx.state.config.idempotency;
        let Some(payment) = ctx.session.paid.as_ref() else {
            self.idempotency
                .abandon(&request.id, &request.fingerprint)
                .await;
            return;
        };
        let key = payment.verified.replay_key;
        let expires_at = payment.verified.valid_before;
        let delivered_whole = request.capture.as_ref().is_some_and(|c| c.complete);
        match payment.life.identifier_end(delivered_whole) {
            IdentifierEnd::KeepResponse => {
                let Some(capture) = request.capture else {
                    return;
                };
                let completed = if capture.too_large {
                    Completed::TooLarge {
                        limit: settings.max_body_bytes,
                    }
                } else {
                    Completed::Response(StoredResponse::new(
                        capture.status,
                        capture.headers,
                        &capture.body,
                    ))
                };
                let delivered = Delivered {
                    id: &request.id,
                    fingerprint: &request.fingerprint,
                    completed: &completed,
                    ttl: settings.ttl,
                };
                self.admission
                    .finish_settled(&key, expires_at, Some(delivered))
                    .await;
            }
            IdentifierEnd::SettledWithoutResponse => {
                self.admission.finish_settled(&key, expires_at, None).await
            }
            IdentifierEnd::HoldUntilExpiry => {}
            IdentifierEnd::Abandon => {
                self.idempotency
                    .abandon(&request.id, &request.fingerprint)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::payment::idempotency::kept_claim as completed;

    #[test]
    fn a_kept_response_is_replayed_as_delivered() {
        let intact = serde_json::Value::String(base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"paid content",
        ));
        let (outcome, reply) = held_identifier_reply(completed(intact)).expect("a reply");
        assert_eq!(outcome, RequestOutcome::Replayed);
        assert_eq!(reply.status, 200);
        assert_eq!(&reply.body[..], b"paid content");
    }

    #[test]
    fn a_corrupt_kept_response_is_an_error_not_an_empty_success() {
        let corrupt = serde_json::Value::String("%%% not base64 %%%".into());
        let (outcome, reply) = held_identifier_reply(completed(corrupt)).expect("a reply");
        assert_eq!(outcome, RequestOutcome::Error);
        assert_eq!(reply.status, 500);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("a JSON error");
        assert_eq!(body["error"], "stored_response_unreadable");
        assert!(
            reply.extra_headers.is_empty(),
            "no receipt is replayed with the error: {:?}",
            reply.extra_headers
        );
    }
}
