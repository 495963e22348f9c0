//! Metered routes whose usage is in the response body (`usage_json`): the gateway carries the
//! exchange itself (`carry.rs`), because the charge is known only once the body has been read and
//! Pingora's body filters cannot wait for a settlement.
//!
//! * a JSON answer is held (up to [`MAX_RESULT_BYTES`]), its usage read, the charge settled, and
//!   only then written, with `PAYMENT-RESPONSE`; a refused or unknown settlement withholds it as on
//!   the head-metered path;
//! * a server-sent event stream passes on event by event; the usage is the last event's that names
//!   the path; the charge is settled when the stream ends and the receipt follows as a last event
//!   (`event: payment-response`), since Pingora cannot write HTTP/1.1 trailers;
//! * anything else (an error status, another content type, a JSON body too large to hold) is
//!   settled from the head alone and relayed.
//!
//! The charge is decided by the payment core (`body_charge`, `UsagePath::read`); this module
//! moves bytes and feeds events.

use super::carry::{incomplete_reply, Carried, Whole, MAX_RESULT_BYTES};
use super::normalise::{read_body, BodyError};
use super::settlement::{attach_receipt, payment_reply, MeterReading, PaidRequest};
use super::{idempotent, Gateway, GatewayState, Reply, RequestCtx};
use crate::payment::{Answer, Event, Outcome, Refusal, SETTLEMENT_OVERRIDES};
use crate::pricing::mcp::SseSplitter;
use crate::pricing::{PricedRoute, SettlementPolicy, UsagePath, MAX_BODY_BYTES};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::Value;

/// The SSE event the receipt of a streamed answer is sent in.
pub const RECEIPT_EVENT: &str = "payment-response";
/// The SSE event a settlement that failed after a streamed answer is reported in.
pub const SETTLEMENT_ERROR_EVENT: &str = "payment-error";

/// Whether the gateway carries requests to `priced` itself: its usage is read from the body.
pub(super) fn reads_body(priced: &PricedRoute) -> bool {
    priced.metering.as_ref().is_some_and(|m| m.body.is_some())
}

/// The request body of a carried metered request, read whole before the payment is admitted, so
/// that a body the gateway cannot carry is refused before any money is reserved.
pub(super) async fn request_body(
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Bytes, Reply> {
    match read_body(session, MAX_BODY_BYTES).await {
        Ok(body) => Ok(Bytes::from(body)),
        Err(BodyError::TooLarge) => {
            ctx.session.count_as(Outcome::Refused);
            Err(Reply::error(
                413,
                "body_too_large",
                &format!(
                    "a metered route's request body is read whole before it is sent on; this one is larger than {MAX_BODY_BYTES} bytes"
                ),
            ))
        }
        Err(BodyError::Unreadable) => {
            ctx.session.count_as(Outcome::Refused);
            Err(Reply::error(
                400,
                "unreadable_body",
                "the request body could not be read",
            ))
        }
    }
}

/// The path the admitted payment's usage is read at, if it is metered from the body.
fn usage_path(ctx: &RequestCtx) -> Option<UsagePath> {
    let terms = ctx.session.paid.as_ref()?.metered.as_ref()?;
    terms.metering.body.as_ref().map(|b| b.path.clone())
}

/// The usage in one JSON document, or why there is none.
fn usage_in(path: &UsagePath, bytes: &[u8]) -> Result<u128, String> {
    let document: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the JSON answer cannot be read ({e}), so `{path}` is unknown"))?;
    path.read(&document).map_err(|e| e.to_string())
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence == "application/json" || essence.ends_with("+json")
}

impl Gateway {
    /// Settles a body-metered payment for the units its answer reported (`used`), the head's
    /// `Settlement-Overrides` winning.
    async fn settle_used(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
        status: u16,
        overrides: Option<&str>,
        used: Result<u128, String>,
    ) -> Answer {
        self.advance_metered(
            state,
            payment,
            status,
            MeterReading::Body { overrides, used },
        )
        .await
    }

    /// Carries an admitted metered request (its `body` read whole) to the upstream and answers the
    /// client once the charge the answer reports is settled.
    pub(super) async fn carry_metered(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: Bytes,
    ) -> pingora::Result<()> {
        let Some(path) = usage_path(ctx) else {
            // Only admitted body-metered payments are carried here; anything else is a mistake of
            // the gateway, answered as one rather than proxied unpaid.
            return Reply::error(
                500,
                "internal_error",
                "the gateway failed to handle the request",
            )
            .write(session)
            .await;
        };
        let mut carried = match self.carry_to_upstream(session, ctx, body, true).await {
            Ok(carried) => carried,
            Err(written) => return written,
        };
        let status = carried.status();
        let overrides = carried.header(SETTLEMENT_OVERRIDES);
        let mut out = carried.client_head()?;
        // The seller's instruction to the gateway is never shown to the buyer.
        if out.headers.contains_key(SETTLEMENT_OVERRIDES) {
            out.remove_header(SETTLEMENT_OVERRIDES);
        }
        let content_type = carried.content_type();
        let succeeded = SettlementPolicy::upstream_succeeded(status);
        // A body the gateway cannot read as sent: compressed despite `Accept-Encoding: identity`,
        // or absent (the answer to a HEAD).
        let encoding = carried
            .header(http::header::CONTENT_ENCODING.as_str())
            .filter(|e| !e.trim().eq_ignore_ascii_case("identity"));
        let bodiless = session.req_header().method == http::Method::HEAD;
        let unreadable = match (&encoding, bodiless) {
            (Some(encoding), _) => Some(format!(
                "the answer is `{encoding}`-encoded, so `{path}` cannot be read from it"
            )),
            (None, true) => Some(format!("the answer to a HEAD request has no `{path}`")),
            (None, false) => None,
        };
        if let (true, Some(problem)) = (succeeded, unreadable) {
            return self
                .settle_and_relay(session, ctx, carried, out, overrides, Err(problem), None)
                .await;
        }
        if succeeded && content_type.starts_with("text/event-stream") {
            return self
                .carry_metered_stream(session, ctx, carried, out, &path, overrides)
                .await;
        }
        let (used, prefix) = if !succeeded {
            // Nothing is charged for an error; the lifecycle decides that from the status.
            (Err(format!("the upstream answered {status}")), None)
        } else if is_json(&content_type) {
            match carried.read_whole(MAX_RESULT_BYTES).await {
                Whole::Complete(bytes) => {
                    let used = usage_in(&path, &bytes);
                    let Carried { http, peer, .. } = carried;
                    self.upstream.release_http_session(http, &peer, None).await;
                    return self
                        .deliver_json(session, ctx, status, out, overrides, used, bytes)
                        .await;
                }
                Whole::TooLarge(prefix) => (
                    Err(format!(
                        "the JSON answer is larger than {MAX_RESULT_BYTES} bytes, too large to read `{path}` from"
                    )),
                    Some(Bytes::from(prefix)),
                ),
                Whole::Broken(e) => {
                    // Nothing complete was delivered: not charged, as a held answer.
                    tracing::warn!(error = %e, "the upstream's JSON answer broke off");
                    carried.http.shutdown().await;
                    let reply = incomplete_reply();
                    return self
                        .carried_upstream_failed(session, ctx, Event::UpstreamBodyCut, reply)
                        .await;
                }
            }
        } else {
            let shown = if content_type.is_empty() {
                "no content type".to_string()
            } else {
                format!("`{content_type}`")
            };
            (
                Err(format!(
                    "the answer ({shown}) is neither JSON nor an event stream, so `{path}` is unknown"
                )),
                None,
            )
        };
        self.settle_and_relay(session, ctx, carried, out, overrides, used, prefix)
            .await
    }

    /// An answer whose usage is not read from its body: settled from the head alone
    /// (Settlement-Overrides, or the fallback; nothing for an error status), then relayed with the
    /// receipt, `prefix` (what was already read of the body) first.
    #[allow(clippy::too_many_arguments)]
    async fn settle_and_relay(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut carried: Carried,
        mut out: ResponseHeader,
        overrides: Option<String>,
        used: Result<u128, String>,
        prefix: Option<Bytes>,
    ) -> pingora::Result<()> {
        let status = carried.status();
        let state = ctx.state.clone();
        let Some(payment) = ctx.session.paid.as_mut() else {
            return self.relay(session, ctx, carried, out, prefix, false).await;
        };
        let answer = self
            .settle_used(&state, payment, status, overrides.as_deref(), used)
            .await;
        if let Some(reply) = payment_reply(&answer, payment) {
            carried.http.shutdown().await;
            tracing::warn!(code = %reply.status, "settlement of a metered request failed; its content is withheld");
            return reply.write(session).await;
        }
        attach_receipt(&mut out, &answer, payment)?;
        idempotent::capture_head(ctx, &out);
        self.relay(session, ctx, carried, out, prefix, true).await
    }

    /// A whole JSON answer: its charge settled, then written with the receipt, or withheld when
    /// the settlement did not succeed.
    #[allow(clippy::too_many_arguments)]
    async fn deliver_json(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        status: u16,
        mut out: ResponseHeader,
        overrides: Option<String>,
        used: Result<u128, String>,
        body: Vec<u8>,
    ) -> pingora::Result<()> {
        let state = ctx.state.clone();
        if let Some(payment) = ctx.session.paid.as_mut() {
            let answer = self
                .settle_used(&state, payment, status, overrides.as_deref(), used)
                .await;
            if let Some(reply) = payment_reply(&answer, payment) {
                tracing::warn!(code = %reply.status, "settlement of a metered request failed; its content is withheld");
                return reply.write(session).await;
            }
            attach_receipt(&mut out, &answer, payment)?;
        }
        self.write_held(session, ctx, out, Bytes::from(body)).await
    }

    /// A server-sent event stream: every event passes on as it comes; the usage is the last one
    /// naming the path; when the stream ends (or breaks off) the charge is settled and the
    /// receipt sent as the stream's last event.
    async fn carry_metered_stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        carried: Carried,
        mut out: ResponseHeader,
        path: &UsagePath,
        overrides: Option<String>,
    ) -> pingora::Result<()> {
        let Carried { mut http, .. } = carried;
        let status = out.status.as_u16();
        out.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        session.write_response_header(Box::new(out), false).await?;
        let mut splitter = SseSplitter::default();
        // The usage of the last event naming the path, read or not.
        let mut reported: Option<Result<u128, String>> = None;
        let mut broke_off: Option<String> = None;
        let mut client_gone: Option<Box<pingora::Error>> = None;
        let mut ended = false;
        while !ended && client_gone.is_none() {
            match http.read_response_body().await {
                Ok(Some(chunk)) => splitter.push(&chunk),
                Ok(None) => ended = true,
                Err(e) => {
                    tracing::warn!(error = %e, "the upstream's event stream broke off");
                    broke_off = Some(e.to_string());
                    ended = true;
                }
            }
            if ended && splitter.pending_len() > 0 {
                // A last event the upstream did not end with a blank line still counts.
                let pending = splitter.take_pending();
                let end: &[u8] = if pending.ends_with(b"\n") {
                    b"\n"
                } else {
                    b"\n\n"
                };
                splitter.push(&pending);
                splitter.push(end);
            }
            while let Some(event) = splitter.next_event() {
                let document = event
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok());
                if let Some(document) = document.filter(|d| path.find(d).is_some()) {
                    reported = Some(path.read(&document).map_err(|e| e.to_string()));
                }
                if let Err(e) = session
                    .write_response_body(Some(Bytes::from(event.raw)), false)
                    .await
                {
                    client_gone = Some(e);
                    break;
                }
            }
            if client_gone.is_none() && splitter.pending_len() > MAX_RESULT_BYTES {
                // An event too large to hold is passed on unread: it cannot be judged, and
                // holding it would hold the whole stream.
                tracing::warn!("an event of the upstream's stream is too large to read usage from");
                let pending = Bytes::from(splitter.take_pending());
                if let Err(e) = session.write_response_body(Some(pending), false).await {
                    client_gone = Some(e);
                }
            }
        }
        if client_gone.is_some() {
            // The work reported so far was done: it is charged even though nobody reads on.
            http.shutdown().await;
        }
        let used = match (reported, broke_off) {
            (Some(used), _) => used,
            (None, Some(e)) => Err(format!(
                "the event stream broke off ({e}) before an event named `{path}`"
            )),
            (None, None) if client_gone.is_some() => {
                Err(format!("the client left before an event named `{path}`"))
            }
            (None, None) => Err(format!("no event of the stream named `{path}`")),
        };
        let state = ctx.state.clone();
        let Some(payment) = ctx.session.paid.as_mut() else {
            return session.write_response_body(None, true).await;
        };
        let answer = self
            .settle_used(&state, payment, status, overrides.as_deref(), used)
            .await;
        if let Some(e) = client_gone {
            tracing::info!(error = %e, "the client left during a metered event stream");
            return Ok(());
        }
        let mut tail = String::new();
        if let Some(receipt) = payment.settlement_receipt() {
            tail.push_str(&format!(
                "event: {RECEIPT_EVENT}\ndata: {}\n\n",
                receipt.encoded
            ));
        }
        if answer != Answer::Deliver {
            // The events are already delivered: the failure can only be told, not withheld.
            let refusal =
                Refusal::withheld(&answer, payment.settlement_receipt(), &payment.network);
            tracing::warn!(code = %refusal.code, "settlement of a metered event stream failed");
            tail.push_str(&format!(
                "event: {SETTLEMENT_ERROR_EVENT}\ndata: {}\n\n",
                refusal.http_json()
            ));
        }
        let tail = (!tail.is_empty()).then(|| Bytes::from(tail));
        session.write_response_body(tail, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for json in [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(json), "{json}");
        }
        for other in ["text/plain", "", "application/jsonl", "text/event-stream"] {
            assert!(!is_json(other), "{other}");
        }
    }

    #[test]
    fn usage_is_read_from_a_document_or_the_problem_named() {
        let path = UsagePath::parse("usage.total_tokens").expect("path");
        assert_eq!(usage_in(&path, br#"{"usage":{"total_tokens":42}}"#), Ok(42));
        let missing = usage_in(&path, br#"{"ok":true}"#).expect_err("missing");
        assert!(missing.contains("usage.total_tokens"), "{missing}");
        let garbage = usage_in(&path, b"not json").expect_err("garbage");
        assert!(garbage.contains("cannot be read"), "{garbage}");
    }
}
