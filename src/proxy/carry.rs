//! The exchanges the gateway carries to the upstream itself instead of letting Pingora proxy them:
//! paid MCP calls (`mcp.rs`), metered routes whose usage is in the response body (`metered.rs`)
//! and paid answers held whole before they are settled (`held.rs`). Pingora's body filters are
//! synchronous, so a settlement that depends on the body cannot happen inside them; carrying the
//! exchange lets the gateway read the answer, settle, and only then write it.
//!
//! Here: sending a request with its whole body, reading the final head, reading a body whole
//! (bounded), relaying one unchanged (an upstream that breaks it off is told as the upstream's
//! error, a client that leaves as the client's), and feeding an upstream failure before anything
//! was written. Nothing here decides about money.

use super::settlement::{attach_receipt, payment_reply};
use super::{
    forwarding_headers, idempotent, proxy_error_reply, upstream_peer_of, Gateway, Reply, RequestCtx,
};
use crate::payment::{is_final_status, Event, BODY_INCOMPLETE};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;

/// The largest answer the gateway holds while it settles: a JSON body, or one SSE event.
pub const MAX_RESULT_BYTES: usize = 4 * 1024 * 1024;

/// Response headers that describe the upstream connection or framing, not the response.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "proxy-connection",
    "upgrade",
];

/// Request headers that describe the client's connection to the gateway, not the request: the
/// carried request is on a connection of the gateway's own (RFC 9110, 7.6.1).
const HOP_BY_HOP_REQUEST: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Removes the hop-by-hop headers of a request, and those its `Connection` header names.
fn drop_hop_by_hop_request_headers(request: &mut pingora::http::RequestHeader) {
    let named: Vec<String> = request
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    for name in HOP_BY_HOP_REQUEST
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        // The framing headers are set by the caller from the body it sends.
        if name != "content-length" && name != "host" && request.headers.contains_key(name) {
            request.remove_header(name);
        }
    }
}

/// An exchange under way: the request sent, the upstream's final head read, its body still to
/// come.
pub(super) struct Carried {
    pub http: HttpSession,
    pub peer: HttpPeer,
    /// The upstream's final (non-1xx) response head.
    pub head: ResponseHeader,
}

/// A body read whole, or as much of it as there was room or time for.
pub(super) enum Whole {
    Complete(Vec<u8>),
    /// Longer than the bound: what was read so far (the rest is still on the connection).
    TooLarge(Vec<u8>),
    /// The upstream broke off before the end.
    Broken(Box<pingora::Error>),
}

impl Carried {
    pub fn status(&self) -> u16 {
        self.head.status.as_u16()
    }

    /// The answer's `Content-Type`, lower-cased (empty when absent or not text).
    pub fn content_type(&self) -> String {
        self.header(http::header::CONTENT_TYPE.as_str())
            .unwrap_or_default()
            .to_ascii_lowercase()
    }

    /// A header of the answer as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The head the client gets: the upstream's status and headers, without the hop-by-hop ones
    /// (the gateway frames its own answer).
    pub fn client_head(&self) -> pingora::Result<ResponseHeader> {
        let mut out = ResponseHeader::build(self.status(), Some(self.head.headers.len() + 4))?;
        for (name, value) in self.head.headers.iter() {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                out.append_header(name.clone(), value.clone())?;
            }
        }
        Ok(out)
    }

    /// Reads the body whole, at most `limit` bytes.
    pub async fn read_whole(&mut self, limit: usize) -> Whole {
        let mut body = Vec::new();
        loop {
            match self.http.read_response_body().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > limit {
                        return Whole::TooLarge(body);
                    }
                }
                Ok(None) => return Whole::Complete(body),
                Err(e) => return Whole::Broken(e),
            }
        }
    }
}

impl Gateway {
    /// Sends the client's request (its head as on the proxied path, with `body` whole) to the
    /// upstream and reads the final head of the answer. With `unencoded`, the upstream is asked
    /// for an answer without content coding, for the gateway to read it.
    pub(super) async fn send_upstream(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        body: Bytes,
        unencoded: bool,
    ) -> pingora::Result<Carried> {
        self.send_upstream_with(session, ctx, body, unencoded, |_| Ok(()))
            .await
    }

    /// [`send_upstream`](Self::send_upstream), with `adjust` given the request head after the
    /// client's hop-by-hop headers are gone (an upgrade puts its own back).
    async fn send_upstream_with(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        body: Bytes,
        unencoded: bool,
        adjust: impl FnOnce(&mut pingora::http::RequestHeader) -> pingora::Result<()>,
    ) -> pingora::Result<Carried> {
        let state = ctx.state.clone();
        let mut upstream_request = session.req_header().clone();
        // The upstream speaks HTTP/1.1 whatever the client spoke (an HTTP/2 request line would be
        // refused); its `Host` comes from `forwarding_headers`.
        upstream_request.set_version(http::Version::HTTP_11);
        // Before the gateway's own headers go in: a client's `Connection` may name any header.
        drop_hop_by_hop_request_headers(&mut upstream_request);
        forwarding_headers(session, &mut upstream_request, ctx)?;
        adjust(&mut upstream_request)?;
        if unencoded {
            upstream_request.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
        }
        upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
        let framed = upstream_request
            .headers
            .contains_key(http::header::CONTENT_LENGTH);
        // A request sent without a body (a GET) stays without a framing header.
        if framed || !body.is_empty() {
            upstream_request.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        }
        let peer = upstream_peer_of(&state);
        // A pooled connection the upstream closed meanwhile fails at once: an idempotent request
        // is sent again on another, as Pingora retries a proxied one (never after a timeout: the
        // upstream may be working on it).
        let retry_allowed = upstream_request.method.is_idempotent();
        let stale = |e: &pingora::Error| {
            !matches!(
                e.etype(),
                pingora::ErrorType::ReadTimedout
                    | pingora::ErrorType::WriteTimedout
                    | pingora::ErrorType::ConnectTimedout
            )
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Boxed: Pingora's connect future is about 9 KB, and held inline it would be copied
            // with every future that awaits this one.
            let (http, reused) = Box::pin(self.upstream.get_http_session(&peer)).await?;
            match self
                .exchange(http, &state, upstream_request.clone(), body.clone())
                .await
            {
                Ok((http, head)) => return Ok(Carried { http, peer, head }),
                Err(e) if reused && retry_allowed && attempt == 1 && stale(&e) => {
                    tracing::debug!(error = %e, "a reused upstream connection failed; sending again");
                }
                Err(e) => return Err(e.into_up()),
            }
        }
    }

    /// Sends one request on `http` and reads the final head of its answer.
    async fn exchange(
        &self,
        mut http: HttpSession,
        state: &super::GatewayState,
        upstream_request: pingora::http::RequestHeader,
        body: Bytes,
    ) -> pingora::Result<(HttpSession, ResponseHeader)> {
        http.set_read_timeout(Some(state.config.upstream.read_timeout));
        http.set_write_timeout(Some(state.config.upstream.read_timeout));
        http.write_request_header(Box::new(upstream_request))
            .await?;
        http.write_request_body(body, true).await?;
        http.finish_request_body().await?;
        let head = loop {
            http.read_response_header().await?;
            match http.response_header() {
                Some(head) if is_final_status(head.status.as_u16()) => break head.clone(),
                Some(_) => continue,
                None => {
                    return Err(pingora::Error::explain(
                        pingora::ErrorType::InvalidHTTPHeader,
                        "the upstream's answer has no head",
                    ))
                }
            }
        };
        Ok((http, head))
    }

    /// Passes the upstream's answer on unchanged, streaming: `prefix` (body bytes already read)
    /// first, then the rest. With `capture`, the body is kept for a resend with the same payment
    /// identifier, as on the proxied path.
    pub(super) async fn relay(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        carried: Carried,
        mut out: ResponseHeader,
        prefix: Option<Bytes>,
        capture: bool,
    ) -> pingora::Result<()> {
        let Carried { mut http, peer, .. } = carried;
        let length = http
            .response_header()
            .and_then(|h| h.headers.get(http::header::CONTENT_LENGTH))
            .cloned();
        match length {
            Some(length) => out.insert_header(http::header::CONTENT_LENGTH, length)?,
            None => out.insert_header(http::header::TRANSFER_ENCODING, "chunked")?,
        }
        session
            .write_response_header(Box::new(out), false)
            .await
            .map_err(|e| e.into_down())?;
        if let Some(prefix) = prefix {
            if capture {
                idempotent::capture_body(ctx, Some(&prefix), false);
            }
            session
                .write_response_body(Some(prefix), false)
                .await
                .map_err(|e| e.into_down())?;
        }
        loop {
            match http.read_response_body().await {
                Ok(Some(chunk)) => {
                    if capture {
                        idempotent::capture_body(ctx, Some(&chunk), false);
                    }
                    session
                        .write_response_body(Some(chunk), false)
                        .await
                        .map_err(|e| e.into_down())?
                }
                Ok(None) => break,
                Err(e) => {
                    // Told as the upstream's failure: the answer is already under way, so the
                    // payment's journal records it as cut (`fail_to_proxy`).
                    tracing::warn!(error = %e, "the upstream's answer broke off");
                    http.shutdown().await;
                    return Err(e.into_up());
                }
            }
        }
        if capture {
            idempotent::capture_body(ctx, None, true);
        }
        session
            .write_response_body(None, true)
            .await
            .map_err(|e| e.into_down())?;
        self.upstream.release_http_session(http, &peer, None).await;
        Ok(())
    }

    /// The upstream of a carried exchange failed before anything of its answer reached the
    /// client: fed to the payment as `event` (nothing charged, or, settled up front, the receipt
    /// goes with the error), answered with `reply`.
    /// [`send_upstream`](Self::send_upstream) for an HTTP route: the upstream's time observed
    /// once it answered; when it cannot be reached, the payment fed `UpstreamFailed` and the
    /// gateway's reply written (`Err` holds that write's result).
    pub(super) async fn carry_to_upstream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: Bytes,
        unencoded: bool,
    ) -> Result<Carried, pingora::Result<()>> {
        self.carry_to_upstream_with(session, ctx, body, unencoded, |_| Ok(()))
            .await
    }

    /// [`carry_to_upstream`](Self::carry_to_upstream) with the request head adjusted as
    /// [`send_upstream_with`](Self::send_upstream_with) does.
    pub(super) async fn carry_to_upstream_with(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        body: Bytes,
        unencoded: bool,
        adjust: impl FnOnce(&mut pingora::http::RequestHeader) -> pingora::Result<()>,
    ) -> Result<Carried, pingora::Result<()>> {
        match self
            .send_upstream_with(session, ctx, body, unencoded, adjust)
            .await
        {
            Ok(carried) => {
                if let Some(started) = ctx.upstream_started.take() {
                    crate::metrics::Metrics::global()
                        .upstream_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                Ok(carried)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the upstream could not be reached");
                let reply = unreachable_reply(&e);
                Err(self
                    .carried_upstream_failed(session, ctx, Event::UpstreamFailed, reply)
                    .await)
            }
        }
    }

    pub(super) async fn carried_upstream_failed(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        event: Event,
        mut reply: Reply,
    ) -> pingora::Result<()> {
        if let Some(payment) = ctx.session.paid.as_mut() {
            if let Some(receipt) = self.upstream_failed(payment, event).await {
                reply = reply.with_settlement(&receipt);
            }
        }
        session.set_keepalive(None);
        reply.write(session).await
    }

    /// Settles a carried answer on its head when the request is paid: `Ok(true)` with the receipt
    /// on `out` (and the head kept for an idempotent resend), or, the settlement failed, the
    /// upstream connection closed and the reply that withholds the answer written (`Ok(false)`).
    /// An unpaid request goes on unchanged.
    pub(super) async fn settle_carried_head(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        carried: &mut Carried,
        out: &mut ResponseHeader,
    ) -> pingora::Result<bool> {
        let state = ctx.state.clone();
        let Some(payment) = ctx.session.paid.as_mut() else {
            return Ok(true);
        };
        let answer = self.settle_on_head(&state, payment, out).await;
        if let Some(reply) = payment_reply(&answer, payment) {
            carried.http.shutdown().await;
            tracing::warn!(code = %reply.status, "settlement failed; the answer is withheld");
            reply.write(session).await?;
            return Ok(false);
        }
        attach_receipt(out, &answer, payment)?;
        idempotent::capture_head(ctx, out);
        Ok(true)
    }

    /// Writes a whole answer the gateway holds (its head in `out`, its `body`), with its length,
    /// and keeps it for an idempotent resend of the payment.
    pub(super) async fn write_held(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut out: ResponseHeader,
        body: Bytes,
    ) -> pingora::Result<()> {
        out.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
        idempotent::capture_head(ctx, &out);
        idempotent::capture_body(ctx, Some(&body), true);
        session.write_response_header(Box::new(out), false).await?;
        session.write_response_body(Some(body), true).await
    }
}

/// The reply to a carried request whose upstream could not be reached or did not answer in time.
pub(super) fn unreachable_reply(e: &pingora::Error) -> Reply {
    match e.etype() {
        pingora::ErrorType::ConnectTimedout
        | pingora::ErrorType::TLSHandshakeTimedout
        | pingora::ErrorType::ReadTimedout
        | pingora::ErrorType::WriteTimedout => proxy_error_reply(e),
        _ => Reply::error(
            502,
            "upstream_unavailable",
            "the upstream could not be reached",
        ),
    }
}

/// The reply to a paid request whose answer broke off before it was whole: nothing was charged.
pub(super) fn incomplete_reply() -> Reply {
    Reply::error(
        502,
        BODY_INCOMPLETE,
        "the upstream's answer broke off before its end; nothing was charged, the payment may be sent again",
    )
}
