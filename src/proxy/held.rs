//! Paid answers held whole before they are settled (`settle_buffer`).
//!
//! An after-success payment whose request the gateway can carry (no body, or one of declared
//! length it reads ahead; not `HEAD`, not an upgrade) is carried by the gateway (`carry.rs`)
//! instead of proxied by Pingora, whose body filters cannot wait for a settlement. Its answer's
//! head decides ([`settle_point`]): a success of declared length up to the route's bound is read
//! whole, then settled, then written with its receipt; a body the upstream breaks off before its
//! end is not charged and the client gets 502 `upstream_body_incomplete`. Anything else (an event
//! stream, no length, longer than the bound, an error status) is settled on its head and relayed
//! as it comes; a relay the upstream breaks off is journaled as cut (`fail_to_proxy`).
//!
//! What is held and when is the payment core's decision ([`holds_answers`], [`settle_point`]);
//! this module moves bytes and feeds events.

use super::carry::{incomplete_reply, Whole};
use super::normalise::read_body;
use super::settlement::{attach_receipt, payment_reply};
use super::{Gateway, Reply, RequestCtx};
use crate::payment::{
    holds_answers, settle_point, Event, PaidRequestShape, RequestBody, SettlePoint,
};
use crate::pricing::MAX_BODY_BYTES;
use bytes::Bytes;
use pingora::proxy::Session;

/// Whether the admitted payment's request is carried by the gateway so that its answer can be
/// held, with `bound` the route's `settle_buffer`.
pub(super) fn holds(session: &mut Session, ctx: &RequestCtx, bound: u64) -> bool {
    let Some(payment) = ctx.session.paid.as_ref() else {
        return false;
    };
    let req = session.req_header();
    let head_only = req.method == http::Method::HEAD;
    let chunked = req.headers.contains_key(http::header::TRANSFER_ENCODING);
    let declared = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let upgrade = session.as_ref().is_upgrade_req();
    let body = if session.as_mut().is_body_empty() {
        RequestBody::None
    } else if session.as_mut().is_body_done() {
        // Read already (to price it by a `_method` field): sent on from the retry buffer.
        match session.as_ref().get_retry_buffer() {
            Some(read) => RequestBody::Length(read.len() as u64),
            None => RequestBody::Unframed,
        }
    } else {
        match (declared, chunked) {
            (Some(length), false) => RequestBody::Length(length),
            _ => RequestBody::Unframed,
        }
    };
    holds_answers(&PaidRequestShape {
        policy: payment.life.policy(),
        bound,
        head_only,
        upgrade,
        body,
        body_limit: MAX_BODY_BYTES as u64,
    })
}

impl Gateway {
    /// Carries an admitted payment's request to the upstream and answers the client: held whole
    /// and settled first when its answer's head allows, settled on the head and relayed otherwise.
    pub(super) async fn carry_held(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        bound: u64,
    ) -> pingora::Result<()> {
        let body = match read_body(session, MAX_BODY_BYTES).await {
            Ok(body) => Bytes::from(body),
            Err(_) => {
                // Nothing was sent on: the payment ends uncharged with the request.
                session.set_keepalive(None);
                return Reply::error(400, "unreadable_body", "the request body could not be read")
                    .write(session)
                    .await;
            }
        };
        let mut carried = match self.carry_to_upstream(session, ctx, body, false).await {
            Ok(carried) => carried,
            Err(written) => return written,
        };
        let mut out = carried.client_head()?;
        let point = settle_point(
            bound,
            carried.status(),
            carried
                .header(http::header::CONTENT_LENGTH.as_str())
                .as_deref(),
            &carried.content_type(),
        );
        let mut prefix = None;
        if let SettlePoint::WholeBody { .. } = point {
            let limit = usize::try_from(bound).unwrap_or(usize::MAX);
            match carried.read_whole(limit).await {
                Whole::Complete(body) => {
                    let super::carry::Carried { http, peer, .. } = carried;
                    self.upstream.release_http_session(http, &peer, None).await;
                    return self.deliver_whole(session, ctx, out, body).await;
                }
                // More than it declared cannot come through a framed body; should it, it streams.
                Whole::TooLarge(read) => prefix = Some(Bytes::from(read)),
                Whole::Broken(e) => {
                    tracing::warn!(error = %e, "the upstream's answer broke off before its end; nothing is charged");
                    carried.http.shutdown().await;
                    let reply = incomplete_reply();
                    return self
                        .carried_upstream_failed(session, ctx, Event::UpstreamBodyCut, reply)
                        .await;
                }
            }
        }
        let paid = ctx.session.paid.is_some();
        if !self
            .settle_carried_head(session, ctx, &mut carried, &mut out)
            .await?
        {
            return Ok(());
        }
        self.relay(session, ctx, carried, out, prefix, paid).await
    }

    /// A whole answer: settled (as its head says), then written with the receipt, or withheld
    /// when the settlement did not succeed.
    async fn deliver_whole(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        mut out: pingora::http::ResponseHeader,
        body: Vec<u8>,
    ) -> pingora::Result<()> {
        let state = ctx.state.clone();
        if let Some(payment) = ctx.session.paid.as_mut() {
            let answer = self.settle_on_head(&state, payment, &mut out).await;
            if let Some(reply) = payment_reply(&answer, payment) {
                tracing::warn!(code = %reply.status, "settlement failed; the answer is withheld");
                return reply.write(session).await;
            }
            attach_receipt(&mut out, &answer, payment)?;
        }
        self.write_held(session, ctx, out, Bytes::from(body)).await
    }
}
