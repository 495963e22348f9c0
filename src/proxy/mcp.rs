//! Pingora glue of paid MCP tools (`mcp = true` routes): the JSON-RPC body of a POST is read and
//! priced here; payment-required results are the gateway's own; a call that carries a payment is
//! carried to the MCP server by the gateway itself, so that the payment leaves the body before
//! the server sees it and the settlement joins the result (JSON or the SSE stream's final event)
//! only after the result says the work was done. Everything else is proxied untouched.
//!
//! The decisions are pure ([`crate::pricing::mcp`], the payment lifecycle); this module moves
//! bytes and feeds events.

use super::admission::PaymentOffer;
use super::carry::{Whole, MAX_RESULT_BYTES};
use super::normalise::{read_body, BodyError};
use super::{idempotent, Gateway, Reply, RequestCtx};
use crate::payment::{Answer, Event, Outcome, Refusal};
use crate::pricing::mcp::{
    is_response_to, judge_response, McpRefusal, McpRequest, McpRoute, McpVerdict, SseSplitter,
    META_PAYMENT,
};
use crate::pricing::MAX_BODY_BYTES;
use crate::x402::PaymentPayload;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::Value;

/// What to do with a request to an MCP route.
pub(super) enum McpDecision {
    /// Proxy it unchanged (any body read goes on from Pingora's retry buffer).
    PassThrough,
    /// The gateway's own answer.
    Answered(McpReply),
    /// The gateway carries the call to the MCP server (the body without its payment), with the
    /// payment admitted in `ctx` when the item is priced.
    Carry(Box<McpRequest>),
}

/// A reply of the gateway's own on an MCP route: a JSON-RPC message (or an HTTP error).
pub(super) struct McpReply {
    pub status: u16,
    pub body: Value,
    /// Headers of the HTTP reply it stands for (`Retry-After`, a settlement header).
    pub headers: Vec<(&'static str, String)>,
}

impl McpReply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub(super) async fn write(&self, session: &mut Session) -> pingora::Result<()> {
        let mut reply = Reply::document(Bytes::from(self.body.to_string()));
        reply.status = self.status;
        reply.headers = self.headers.clone();
        reply.write(session).await
    }
}

/// The MCP form of a refusal: a JSON-RPC message (HTTP 200); the challenge and the settlement
/// answer go in the message where it has a place for them, in the headers otherwise.
fn mcp_refusal(request: &McpRequest, refusal: &Refusal) -> McpReply {
    let headers = if refusal.carried_in_mcp_message() {
        Vec::new()
    } else {
        refusal.http_headers()
    };
    McpReply {
        status: 200,
        body: refusal.mcp_reply(request),
        headers,
    }
}

/// The MCP form of a reply the payment path produced: a refusal rendered from its typed form,
/// or a response kept for an idempotent resend, replayed under this request's id.
fn mcp_reply(request: &McpRequest, reply: Reply) -> McpReply {
    if let Some(refusal) = &reply.refusal {
        return mcp_refusal(request, refusal);
    }
    let kept = serde_json::from_slice::<Value>(&reply.body)
        .ok()
        .filter(|b| b.get("jsonrpc").is_some());
    match kept {
        Some(mut kept) => {
            // The resend has an id of its own.
            kept["id"] = request.id.clone();
            McpReply::json(reply.status, kept)
        }
        // Nothing else reaches here; should it, the client gets an error, never content.
        None => mcp_refusal(
            request,
            &Refusal::new(
                reply.status,
                "gateway_error",
                "the gateway could not answer",
            ),
        ),
    }
}

impl Gateway {
    /// Decides a request to an MCP route. Only POSTs carry JSON-RPC requests; GET (the server's
    /// stream) and DELETE (session end) pass through.
    pub(super) async fn decide_mcp(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mcp: &McpRoute,
        method: &http::Method,
    ) -> McpDecision {
        if method != http::Method::POST {
            return McpDecision::PassThrough;
        }
        let body = match read_body(session, MAX_BODY_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                ctx.session.count_as(Outcome::Refused);
                let refusal = McpRefusal::TooLarge {
                    limit: MAX_BODY_BYTES,
                };
                return McpDecision::Answered(McpReply::json(413, refusal.to_reply()));
            }
            Err(BodyError::Unreadable) => {
                ctx.session.count_as(Outcome::Refused);
                // Before the body is read there is no JSON-RPC request to answer: the HTTP form.
                let refusal = Refusal::new(
                    400,
                    "unreadable_body",
                    "the request body could not be read before pricing the request",
                );
                return McpDecision::Answered(McpReply::json(400, refusal.http_json()));
            }
        };
        let request = match McpRequest::parse(&body, MAX_BODY_BYTES) {
            Ok(request) => request,
            Err(refusal) => {
                ctx.session.count_as(Outcome::Refused);
                return McpDecision::Answered(McpReply::json(400, refusal.to_reply()));
            }
        };
        let Some((position, item)) = mcp.find(&request.item) else {
            // Free: forwarded as sent, unless a payment must come out of it first.
            return match request.payment {
                None => McpDecision::PassThrough,
                Some(_) => McpDecision::Carry(Box::new(request)),
            };
        };
        ctx.mcp_item = Some(position);
        let url = item.resource_url();
        let priced = &item.priced;
        let Some(raw) = request.payment.clone() else {
            let client_ip = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Some(reply) = self.rate_limited(ctx, client_ip, None).await {
                ctx.session.count_as(Outcome::Refused);
                return McpDecision::Answered(mcp_reply(&request, reply));
            }
            ctx.session.count_as(Outcome::Challenged);
            if let Some(m) = ctx.state.metrics_for(ctx.route_index, ctx.mcp_item) {
                m.payment_required.inc();
            }
            let challenge = priced.v2_challenge(
                &url,
                "POST",
                &format!(
                    "Payment required: send a PaymentPayload in params._meta[\"{}\"]",
                    META_PAYMENT
                ),
            );
            let challenge = serde_json::from_str(&challenge).unwrap_or(Value::Null);
            return McpDecision::Answered(McpReply::json(
                200,
                request.payment_required_reply(challenge),
            ));
        };
        let payment = match PaymentPayload::from_json(&raw) {
            Ok(payment) => payment,
            Err(message) => {
                ctx.session.count_as(Outcome::Refused);
                let challenge = priced.v2_challenge(&url, "POST", "invalid_payment");
                let mut challenge: Value = serde_json::from_str(&challenge).unwrap_or(Value::Null);
                challenge["message"] = Value::String(format!(
                    "_meta[\"{}\"] cannot be read: {message}",
                    META_PAYMENT
                ));
                return McpDecision::Answered(McpReply::json(
                    200,
                    request.payment_required_reply(challenge),
                ));
            }
        };
        let batch = matches!(payment, PaymentPayload::Batch(_));
        let offer = PaymentOffer {
            url: &url,
            method: "POST",
            target: &url,
            path: &url,
            payment,
            raw,
        };
        let admitted = if batch {
            Box::pin(self.admit_batch(ctx, priced, offer)).await
        } else {
            self.admit_payment(session, ctx, priced, offer).await
        };
        match admitted {
            None => {
                if let Some(payment) = ctx.session.paid.as_mut() {
                    payment.item_index = Some(position);
                }
                McpDecision::Carry(Box::new(request))
            }
            Some(reply) => McpDecision::Answered(mcp_reply(&request, reply)),
        }
    }

    /// Carries `request` to the MCP server and answers the client: the result with its
    /// settlement, the content withheld when settlement failed, or the server's answer as it is
    /// when nothing is charged.
    pub(super) async fn carry_mcp(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        request: &McpRequest,
    ) -> pingora::Result<()> {
        let state = ctx.state.clone();
        let body = Bytes::from(request.forwarded_body());
        let mut carried = match self.send_upstream(session, ctx, body, false).await {
            Ok(carried) => carried,
            Err(e) => {
                tracing::warn!(error = %e, "the MCP server could not be reached");
                return self.mcp_upstream_failed(session, ctx, request).await;
            }
        };
        let status = carried.status();
        let content_type = carried.content_type();
        let mut out = carried.client_head()?;
        let paid = ctx.session.paid.is_some();
        if !(200..300).contains(&status) || !paid {
            // No JSON-RPC result to judge: the status alone decides, as on an HTTP route (below
            // 400 settles after success, above charges nothing; settled up front, the receipt
            // goes with whatever the server answered).
            if let Some(payment) = ctx.session.paid.as_mut() {
                let answer = self
                    .advance(&state, payment, Event::UpstreamAnswered { status })
                    .await;
                if answer != Answer::Deliver {
                    // Settlement refused or failed: the server's answer is withheld.
                    carried.http.shutdown().await;
                    let receipt = payment.settlement_receipt();
                    let refusal = Refusal::withheld(&answer, receipt, &payment.network);
                    tracing::warn!(code = %refusal.code, status, "settlement of a paid MCP call failed; its content is withheld");
                    return mcp_refusal(request, &refusal).write(session).await;
                }
                if let Some(receipt) = payment.settlement_receipt() {
                    out.insert_header(receipt.header_name(), receipt.encoded.as_str())?;
                }
            }
            return self.relay(session, ctx, carried, out, None, false).await;
        }
        if content_type.starts_with("text/event-stream") {
            return self
                .carry_stream(session, ctx, request, status, carried.http, out)
                .await;
        }
        let (complete, body) = match carried.read_whole(MAX_RESULT_BYTES).await {
            Whole::Complete(body) => (true, body),
            Whole::TooLarge(body) => (false, body),
            Whole::Broken(e) => {
                tracing::warn!(error = %e, "the MCP server's answer broke off");
                (false, Vec::new())
            }
        };
        let message: Option<Value> = serde_json::from_slice(&body).ok();
        let message = match message.filter(|m| complete && is_response_to(m, &request.id)) {
            Some(message) => message,
            None => return self.mcp_upstream_failed(session, ctx, request).await,
        };
        self.upstream
            .release_http_session(
                carried.http,
                &carried.peer,
                Some(state.config.upstream.idle_timeout),
            )
            .await;
        let answer = self.conclude(ctx, request, status, message).await;
        out.insert_header(http::header::CONTENT_TYPE, "application/json")?;
        self.write_held(session, ctx, out, Bytes::from(answer.to_string()))
            .await
    }

    /// The paid call's result (answered with `status`) judged, settled when it says the work was
    /// done, and the message the client gets.
    async fn conclude(
        &self,
        ctx: &mut RequestCtx,
        request: &McpRequest,
        status: u16,
        mut message: Value,
    ) -> Value {
        let state = ctx.state.clone();
        let Some(payment) = ctx.session.paid.as_mut() else {
            return message;
        };
        let event = match judge_response(&message) {
            McpVerdict::Delivered => Event::UpstreamAnswered { status },
            McpVerdict::Failed { reason } => Event::ResultFailed {
                reason: reason.to_string(),
            },
        };
        let answer = self.advance(&state, payment, event).await;
        let receipt = payment.settlement_receipt();
        if answer != Answer::Deliver {
            let refusal = Refusal::withheld(&answer, receipt, &payment.network);
            tracing::warn!(code = %refusal.code, "settlement of a paid MCP call failed; its content is withheld");
            return refusal.mcp_reply(request);
        }
        if let Some(settlement) = receipt.and_then(|r| r.decoded()) {
            request.attach_settlement(&mut message, &settlement);
        }
        message
    }

    /// A paid call answered as a Server-Sent Events stream: events pass on as they come; the one
    /// holding the response waits for the settlement and carries it.
    async fn carry_stream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        request: &McpRequest,
        status: u16,
        mut http: pingora::protocols::http::client::HttpSession,
        mut out: ResponseHeader,
    ) -> pingora::Result<()> {
        out.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        session.write_response_header(Box::new(out), false).await?;
        let mut splitter = SseSplitter::default();
        loop {
            let chunk = match http.read_response_body().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the MCP server's stream broke off");
                    break;
                }
            };
            splitter.push(&chunk);
            while let Some(event) = splitter.next_event() {
                let message = event
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<Value>(d).ok())
                    .filter(|m| is_response_to(m, &request.id));
                let Some(message) = message else {
                    session
                        .write_response_body(Some(Bytes::from(event.raw)), false)
                        .await?;
                    continue;
                };
                let answer = self.conclude(ctx, request, status, message).await;
                let text = answer.to_string();
                let mut kept = ResponseHeader::build(200, Some(1))?;
                kept.insert_header(http::header::CONTENT_TYPE, "application/json")?;
                idempotent::capture_head(ctx, &kept);
                idempotent::capture_body(ctx, Some(&Bytes::from(text.clone())), true);
                let event = Bytes::from(event.with_data(&text));
                session.write_response_body(Some(event), true).await?;
                // The response ends the exchange; the server closes its stream after it.
                http.shutdown().await;
                return Ok(());
            }
            if splitter.pending_len() > MAX_RESULT_BYTES {
                tracing::warn!("an event of the MCP server's stream is too large to hold");
                break;
            }
        }
        // The stream ended without the response: nothing was done that can be charged (settled
        // up front, the receipt goes with the error, as on every upstream failure).
        let mut refusal = Refusal::new(
            502,
            "upstream_unavailable",
            "the MCP server's stream ended without a response; nothing was charged",
        );
        if let Some(payment) = ctx.session.paid.as_mut() {
            if let Some(receipt) = self.upstream_failed(payment, Event::UpstreamFailed).await {
                refusal = Refusal::new(
                    502,
                    "upstream_unavailable",
                    "the MCP server's stream ended without a response; the payment was settled before the call",
                )
                .with_receipt(receipt);
            }
        }
        let error = refusal.mcp_reply(request);
        let event = format!("event: message\ndata: {error}\n\n");
        session
            .write_response_body(Some(Bytes::from(event)), true)
            .await?;
        Ok(())
    }

    /// The MCP server could not be reached or gave no usable answer: nothing is charged (or,
    /// settled up front, the receipt goes with the error).
    async fn mcp_upstream_failed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        request: &McpRequest,
    ) -> pingora::Result<()> {
        let mut refusal = Refusal::new(
            502,
            "upstream_unavailable",
            "the MCP server could not be reached or gave no usable answer; nothing was charged",
        );
        if let Some(payment) = ctx.session.paid.as_mut() {
            if let Some(receipt) = self.upstream_failed(payment, Event::UpstreamFailed).await {
                refusal = Refusal::new(
                    502,
                    "upstream_unavailable",
                    "the MCP server could not be reached; the payment was settled before the call",
                )
                .with_receipt(receipt);
            }
        }
        mcp_refusal(request, &refusal).write(session).await
    }
}
