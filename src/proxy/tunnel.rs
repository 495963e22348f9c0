//! Upgrade requests (`Connection: Upgrade`, e.g. a WebSocket), carried by the gateway: the
//! request goes to the upstream, its answer's head is settled like any other (a paid `101` is
//! settled before the tunnel opens, with the receipt on the `101`), and after a `101` the bytes
//! are passed both ways until either side closes.
//!
//! Pingora's own proxy loop can end such a tunnel at its start: the end of the (empty) request
//! body, queued before the upstream's `101` arrived, may be taken after it and read as the end of
//! the tunnel. Carrying the exchange here keeps the request's end and the tunnel's apart. Nothing
//! here decides about money.

use super::carry::Carried;
use super::{Gateway, RequestCtx};
use bytes::Bytes;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;

/// Whether the request is an upgrade the gateway carries: an HTTP/1.1 upgrade without a request
/// body (one with a body is left to the proxy, which sends the body before the tunnel).
pub(super) fn carries(session: &mut Session) -> bool {
    session.is_upgrade_req() && session.as_mut().is_body_empty()
}

impl Gateway {
    /// Carries an upgrade request: its answer settled on the head (when paid), then either the
    /// tunnel after a `101`, or the answer relayed as it comes.
    pub(super) async fn carry_upgrade(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let mut carried = match self.carry_upgrade_to_upstream(session, ctx).await {
            Ok(carried) => carried,
            Err(written) => return written,
        };
        let mut out = carried.client_head()?;
        let paid = ctx.session.paid.is_some();
        // Whatever comes, nothing follows on this connection: its bytes were to be the tunnel's.
        session.set_keepalive(None);
        if !self
            .settle_carried_head(session, ctx, &mut carried, &mut out)
            .await?
        {
            return Ok(());
        }
        if carried.status() != 101 {
            // The upstream declined the upgrade: an ordinary answer.
            return self.relay(session, ctx, carried, out, None, paid).await;
        }
        let protocol = carried.header(http::header::UPGRADE.as_str());
        out.insert_header(http::header::CONNECTION, "upgrade")?;
        if let Some(protocol) = protocol {
            out.insert_header(http::header::UPGRADE, protocol)?;
        }
        session
            .write_response_header(Box::new(out), false)
            .await
            .map_err(|e| e.into_down())?;
        let Carried { mut http, .. } = carried;
        if let HttpSession::H1(h1) = &mut http {
            // The request's bytes from here on are the tunnel's, not a framed body.
            h1.maybe_upgrade_body_writer();
        }
        pump(session, &mut http).await;
        http.shutdown().await;
        Ok(())
    }

    /// Sends the upgrade request with its `Connection: upgrade` and `Upgrade` headers (dropped
    /// from other carried requests as hop-by-hop) and reads the answer's head.
    async fn carry_upgrade_to_upstream(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Carried, pingora::Result<()>> {
        let protocol = session
            .req_header()
            .headers
            .get(http::header::UPGRADE)
            .cloned();
        self.carry_to_upstream_with(session, ctx, Bytes::new(), false, |request| {
            if let Some(protocol) = protocol {
                request.insert_header(http::header::CONNECTION, "upgrade")?;
                request.insert_header(http::header::UPGRADE, protocol)?;
            }
            Ok(())
        })
        .await
    }
}

/// Passes bytes both ways until either side closes or fails; a tunnel's end is not a payment
/// event (its answer was settled on the `101`).
async fn pump(session: &mut Session, upstream: &mut HttpSession) {
    loop {
        tokio::select! {
            from_client = session.read_request_body() => match from_client {
                Ok(Some(bytes)) => {
                    if let Err(e) = upstream.write_request_body(bytes, false).await {
                        tracing::debug!(error = %e, "the tunnel's upstream stopped taking bytes");
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "the tunnel's client left");
                    return;
                }
            },
            from_upstream = upstream.read_response_body() => match from_upstream {
                Ok(Some(bytes)) => {
                    if let Err(e) = session.write_response_body(Some(bytes), false).await {
                        tracing::debug!(error = %e, "the tunnel's client stopped taking bytes");
                        return;
                    }
                }
                Ok(None) => {
                    if let Err(e) = session.write_response_body(None, true).await {
                        tracing::debug!(error = %e, "the tunnel's client left before its end");
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "the tunnel's upstream closed");
                    return;
                }
            },
        }
    }
}
