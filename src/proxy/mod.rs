//! The Pingora service: one request, top to bottom.
//!
//! ```text
//! request_filter ─ match route ─ free/unmatched ────────────────────────────────┐
//!                  └ priced ─ no payment header ──► 402 challenge (upstream untouched)
//!                            └ admission: decode ─ match option ─ local checks ─ reserve
//!                                 ─ /verify (settle = "before": /settle instead) ┤
//!                                 ─ after-success, answer may be held: carried  │
//!                                   (held.rs: whole body ─ /settle ─ write)      │
//!                  └ an upgrade that may go on: carried (tunnel.rs: 101 ─ /settle ─ tunnel)
//! upstream_peer ─ upstream_request_filter (Host, X-Forwarded-*, payer headers) ◄┘
//! response_filter ─ 1xx: passed on, nothing decided
//!                 ─ upstream < 400 ─ /settle ─ PAYMENT-RESPONSE ─ stream body
//!                 └ upstream ≥ 400 ─ pass through, nothing charged
//! fail_to_proxy ─ gateway replies (settlement failed or unconfirmed, upstream down)
//! logging ─ conclude what is open, one log line per payment
//! ```
//! Every money decision is the payment lifecycle's ([`crate::payment::Lifecycle`]). Each request
//! owns one payment session (`session.rs`: the payment, its identifier claim, its refusal and
//! outcome); the phases feed the lifecycle events and one executor carries out what it returns
//! (`settlement.rs`: reservation, journal, `/settle`). Paid MCP calls (`mcp.rs`) and metered
//! routes whose usage is in the response body (`metered.rs`) use the same session and executor,
//! and so do paid answers held whole before they are settled (`held.rs`, `settle_buffer`); the
//! gateway carries those exchanges itself (`carry.rs`), since their settlement waits for the
//! body and Pingora's body filters cannot wait. A settled answer the upstream breaks off on its
//! way out is journaled as cut (`fail_to_proxy`). Upgrade requests are carried too (`tunnel.rs`):
//! Pingora's proxy loop can take the end of their empty request body for the end of the tunnel.
//! A payment is settled at most once per request (retries after a settlement attempt are
//! disabled).

mod admission;
mod batch;
mod carry;
mod claims;
mod held;
mod idempotent;
mod limits;
mod mcp;
mod metered;
mod normalise;
mod reply;
mod server;
mod session;
mod settlement;
mod tunnel;

pub use crate::state::{escape, prefers_html, Pages, DISCOVERY_PATH};
pub use reply::Reply;
pub use server::{build_server, GatewayServer, GatewayState, StartError, UNMATCHED_LABEL};

use crate::config::UnmatchedPolicy;
use crate::metrics::Metrics;
use crate::ops::journal::{Journal, JournalEntry, JournalError};
use crate::ops::{Health, InFlight};
use crate::payment::claims::AdmissionStore;
use crate::payment::idempotency::IdempotencyStore;
use crate::payment::{is_final_status, Event, Outcome, PaymentState, ReplayGuard};
use crate::pricing::{RequestFacts, RouteKind};
use crate::store::{RateCounter, SignInStore, Stores};
use crate::x402::{PAYMENT_SIGNATURE, X_PAYMENT};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::ALPN;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use session::PaymentSession;
use settlement::{attach_receipt, payment_reply};
use std::sync::Arc;
use std::time::Instant;

/// The proxy service. Configuration is read through an atomic snapshot per request.
pub struct Gateway {
    state: Arc<ArcSwap<GatewayState>>,
    replay: Arc<dyn ReplayGuard>,
    journal: Option<Arc<dyn Journal>>,
    health: Arc<Health>,
    idempotency: Arc<dyn IdempotencyStore>,
    rates: Arc<dyn RateCounter>,
    /// The claims of a paid request (counters, identifier, reservation) in one exchange.
    admission: Arc<dyn AdmissionStore>,
    /// Access grants of settled payments and used sign-in nonces.
    sign_in: Arc<dyn SignInStore>,
    /// `batch-settlement` channels.
    channels: Arc<dyn crate::store::ChannelStore>,
    /// Connections to the upstream for the calls the gateway carries itself (paid MCP calls).
    upstream: pingora::connectors::http::Connector,
}

impl Gateway {
    /// The proxy over `state`, keeping payment state in `stores` and recording payments in
    /// `journal`.
    pub fn new(
        state: Arc<ArcSwap<GatewayState>>,
        stores: Stores,
        journal: Option<Arc<dyn Journal>>,
        health: Arc<Health>,
    ) -> Self {
        let Stores {
            replay,
            idempotency,
            rates,
            admission,
            sign_in,
            channels,
        } = stores;
        Self {
            state,
            replay,
            journal,
            health,
            idempotency,
            rates,
            admission,
            sign_in,
            channels,
            upstream: pingora::connectors::http::Connector::new(None),
        }
    }

    /// Records a payment event durably; the caller's response waits for it.
    async fn record(
        &self,
        entry: Option<&JournalEntry>,
        state: PaymentState,
        reason: &str,
    ) -> Result<(), JournalError> {
        let (Some(journal), Some(entry)) = (&self.journal, entry) else {
            return Ok(());
        };
        let mut line = entry.next(state);
        line.reason = reason.to_string();
        journal.append(line).await
    }
}

pub struct RequestCtx {
    state: Arc<GatewayState>,
    /// Index (file order) of the matched route.
    route_index: Option<usize>,
    upstream_started: Option<Instant>,
    _in_flight: InFlight,
    /// Everything the request decides about money: the payment, its identifier, its refusal.
    session: PaymentSession,
    started: Instant,
    /// The priced item of an MCP route the request names (position in the route's items).
    mcp_item: Option<usize>,
}

/// The method a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`) asks about.
fn preflight_method(req: &RequestHeader) -> Option<http::Method> {
    if req.method != http::Method::OPTIONS {
        return None;
    }
    let asked = req.headers.get("access-control-request-method")?;
    http::Method::from_bytes(asked.as_bytes()).ok()
}

impl RequestCtx {
    /// The matched route's `match` string, for logs and the journal, with the MCP item it names
    /// (`POST /mcp tool search`).
    fn route_label(&self) -> String {
        let route = self
            .route_index
            .and_then(|i| self.state.config.routes.get(i));
        let item = match (route.map(|r| &r.kind), self.mcp_item) {
            (Some(RouteKind::Mcp(mcp)), Some(i)) => mcp.items.get(i),
            _ => None,
        };
        match (route, item) {
            (Some(route), Some(item)) => format!("{} {}", route.label(), item.label()),
            (Some(route), None) => route.label().to_string(),
            (None, _) => String::new(),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            state: self.state.load_full(),
            route_index: None,
            upstream_started: None,
            _in_flight: InFlight::start(&self.health),
            session: PaymentSession::default(),
            started: Instant::now(),
            mcp_item: None,
        }
    }

    /// Before anything else: HTTP/1.1 requests pipelined behind this one on its keep-alive
    /// connection wait for its answer to be complete and are then served in order. Pingora's
    /// default reads a request arriving while an answer streams as an error and cuts that answer
    /// (after its settlement, on a paid route), and closes the connection, after an answer that
    /// said keep-alive, when the next request came in with this one.
    /// An upgrade request is the last request of its connection: the bytes after it belong to the
    /// tunnel, never to a next request, so pipelining stays off for it (with it on, bytes the
    /// client sends right after the `101` could be kept back as the start of a next request).
    async fn early_request_filter(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        if !session.is_upgrade_req() {
            session.set_pipelining_enabled(true);
        }
        Ok(())
    }

    /// Phase 1: decide whether the request may reach the upstream at all; an upgrade that may is
    /// carried by the gateway (`tunnel.rs`).
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<bool> {
        if self.answer_or_carry(session, ctx).await? {
            return Ok(true);
        }
        if tunnel::carries(session) {
            Box::pin(self.carry_upgrade(session, ctx)).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(upstream_peer_of(&ctx.state)))
    }

    /// Phase 2: what the upstream sees. Payment headers never reach it; the verified payer does.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        forwarding_headers(session, upstream_request, ctx)
    }

    /// Phase 3: the upstream's answer goes to the lifecycle, which settles, charges nothing or
    /// waits for the final status (1xx); the receipt goes on the header that leaves.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        let status = upstream_response.status.as_u16();
        if !is_final_status(status) {
            // 100 Continue, 103 Early Hints: passed on, and the final answer is still to come.
            if ctx.session.paid.is_some() {
                tracing::debug!(status, "informational upstream response; nothing settled");
            }
            return Ok(());
        }
        if let Some(started) = ctx.upstream_started.take() {
            Metrics::global()
                .upstream_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let state = ctx.state.clone();
        let Some(payment) = ctx.session.paid.as_mut() else {
            return Ok(());
        };
        let answer = self
            .settle_on_head(&state, payment, upstream_response)
            .await;
        if let Some(reply) = payment_reply(&answer, payment) {
            let status = reply.status;
            ctx.session.fail_with(reply);
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                "settlement did not succeed",
            ));
        }
        attach_receipt(upstream_response, &answer, payment)?;
        idempotent::capture_head(ctx, upstream_response);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<Option<std::time::Duration>> {
        idempotent::capture_body(ctx, body.as_ref(), end_of_stream);
        Ok(None)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Retrying after a settlement attempt could settle twice or serve twice.
        let settled = ctx
            .session
            .paid
            .as_ref()
            .is_some_and(|p| p.life.settle_attempted());
        if settled
            || !session.req_header().method.is_idempotent()
            || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Self::CTX, _error: &Error) -> bool {
        ctx.session.failed_by_choice()
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let gateway_reply = ctx.session.take_chosen_reply();
        let upstream_failed = gateway_reply.is_none();
        let mut reply = gateway_reply.unwrap_or_else(|| proxy_error_reply(e));
        let downstream_gone = matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        ) && e.esource() == &pingora::ErrorSource::Downstream;
        if let (true, Some(payment)) = (upstream_failed, ctx.session.paid.as_mut()) {
            // The answer was under way when the upstream broke it off: a settled stream is
            // journaled as cut.
            let cut = session.response_written().is_some()
                && e.esource() == &pingora::ErrorSource::Upstream;
            let event = if cut {
                Event::UpstreamBodyCut
            } else {
                Event::UpstreamFailed
            };
            // Settled up front: the money moved, so the receipt goes with the error.
            if let Some(receipt) = self.upstream_failed(payment, event).await {
                reply = reply.with_settlement(&receipt);
            }
        }
        if downstream_gone || session.response_written().is_some() {
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        // The connection is not reused after a proxy failure: say so, or clients race a close.
        session.set_keepalive(None);
        if let Err(write_error) = reply.write(session).await {
            tracing::debug!(error = %write_error, "could not write the error reply");
        }
        FailToProxy {
            error_code: reply.status,
            can_reuse_downstream: false,
        }
    }

    /// Last phase, on every path: release what was not settled, close the payment's journal
    /// entry, count the request and log the payment.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        self.finish_identifier(ctx).await;
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let state = ctx.state.clone();
        let route_metrics = state.metrics_for(ctx.route_index, ctx.mcp_item);
        if let (402, Some(m)) = (status, route_metrics) {
            m.payment_required.inc();
        }
        if let Some(payment) = ctx.session.paid.as_mut() {
            self.feed(payment, Event::Ended).await;
        }
        let unpaid_default = if status >= 500 || status == 0 {
            Outcome::Error
        } else {
            Outcome::Free
        };
        let outcome = ctx.session.outcome().unwrap_or(match ctx.session.paid {
            // A payment always ends with an outcome; one without is an error of the gateway.
            Some(_) => Outcome::Error,
            None => unpaid_default,
        });
        if let Some(m) = route_metrics {
            m.outcome(outcome).inc();
            if ctx.session.paid.as_ref().is_some_and(|p| p.answer_cut) {
                m.answers_cut.inc();
            }
        }
        let Some(payment) = ctx.session.paid.as_ref() else {
            return;
        };
        let stage = payment.life.stage();
        tracing::info!(
            route = ctx.route_label().as_str(),
            payer = %payment.verified.payer,
            amount = %payment.verified.amount,
            network = %payment.network,
            tx = %payment.transaction,
            settlement = stage.finality().map_or("", |f| f.as_str()),
            outcome = stage.name(),
            status,
            error = e.map(|e| format!("{:?}", e.etype())).unwrap_or_default(),
            latency_ms = ctx.started.elapsed().as_millis() as u64,
            "payment"
        );
    }
}

impl Gateway {
    /// Answers the request itself (refused, a document, an MCP or held answer it carries) or, when
    /// it may go on as it is, returns `false` for the proxy.
    async fn answer_or_carry(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let priced_as = match normalise::priced_as(session.req_header(), &ctx.state) {
            Ok(priced_as) => normalise::priced_by_body(session, priced_as, &ctx.state).await,
            Err(refusal) => Err(refusal),
        };
        let priced_as = match priced_as {
            Ok(priced_as) => priced_as,
            Err(refusal) => {
                ctx.session.count_as(Outcome::Refused);
                refusal.write(session).await?;
                return Ok(true);
            }
        };
        let state = ctx.state.clone();
        let req = session.req_header();
        if let Some(document) = &state.pages.discovery {
            let read = req.method == http::Method::GET || req.method == http::Method::HEAD;
            if read && req.uri.path() == DISCOVERY_PATH {
                Reply::document(document.clone()).write(session).await?;
                return Ok(true);
            }
        }
        if let Some(asked) = preflight_method(req) {
            // A CORS preflight carries no payment and returns no content; pricing it would stop
            // browsers from ever sending the paid request. The upstream owns its CORS policy.
            let served = state.config.routes.find(&asked, &priced_as.path).is_some();
            if served || state.config.unmatched == UnmatchedPolicy::Proxy {
                return Ok(false);
            }
        }
        let matched = state.config.routes.find(&priced_as.method, &priced_as.path);
        if let Some((index, RouteKind::Mcp(mcp))) = matched.map(|r| (r.index, &r.kind)) {
            ctx.route_index = Some(index);
            return match Box::pin(self.decide_mcp(session, ctx, mcp, &priced_as.method)).await {
                mcp::McpDecision::PassThrough => Ok(false),
                mcp::McpDecision::Answered(reply) => {
                    reply.write(session).await?;
                    Ok(true)
                }
                mcp::McpDecision::Carry(request) => {
                    Box::pin(self.carry_mcp(session, ctx, &request)).await?;
                    Ok(true)
                }
            };
        }
        // The request body of a route metered from the response body, carried by the gateway.
        let mut carried_body = None;
        // The route's bound of an answer held whole before it is settled.
        let mut settle_buffer = None;
        let reply = match matched {
            None => match state.config.unmatched {
                UnmatchedPolicy::Proxy => None,
                UnmatchedPolicy::Deny => Some(Reply::error(
                    404,
                    "no_route",
                    "no route of this gateway serves this path",
                )),
            },
            Some(route) => {
                ctx.route_index = Some(route.index);
                match &route.kind {
                    RouteKind::Free | RouteKind::Mcp(_) => None,
                    RouteKind::Priced(priced) => {
                        // The path the request is priced as, so that a rule sees the same
                        // spelling the route matched (case folding, overrides, alias forms).
                        let facts = RequestFacts {
                            canonical_path: &priced_as.path,
                            query: req.uri.query(),
                            headers: &req.headers,
                        };
                        let priced = priced.for_request(&facts);
                        let body = if metered::reads_body(priced) {
                            match Box::pin(metered::request_body(session, ctx)).await {
                                Ok(body) => Some(body),
                                Err(reply) => {
                                    reply.write(session).await?;
                                    return Ok(true);
                                }
                            }
                        } else {
                            None
                        };
                        let reply = Box::pin(self.admit_paid_request(
                            session,
                            ctx,
                            priced,
                            &priced_as.method,
                            &priced_as.path,
                        ))
                        .await;
                        settle_buffer = Some(
                            priced
                                .settle_buffer
                                .map_or(state.config.server.settle_buffer, u64::from),
                        );
                        carried_body = body;
                        reply
                    }
                }
            }
        };
        match (reply, carried_body) {
            (Some(reply), _) => {
                reply.write(session).await?;
                Ok(true)
            }
            // Admitted and metered from the body: the gateway carries the exchange itself.
            (None, Some(body)) if ctx.session.paid.is_some() => {
                Box::pin(self.carry_metered(session, ctx, body)).await?;
                Ok(true)
            }
            // Admitted, settled after success: an answer of known length within the bound is
            // held whole before it is settled, so the gateway carries the exchange itself.
            (None, None) => match settle_buffer {
                Some(bound) if held::holds(session, ctx, bound) => {
                    Box::pin(self.carry_held(session, ctx, bound)).await?;
                    Ok(true)
                }
                _ => Ok(false),
            },
            (None, Some(_)) => Ok(false),
        }
    }
}

/// The gateway's reply for a proxying error: a timeout, an unreachable upstream, a client that
/// could not be read.
fn proxy_error_reply(e: &Error) -> Reply {
    match e.etype() {
        ErrorType::HTTPStatus(code) => Reply::error(*code, "gateway_error", &e.to_string()),
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => Reply::error(
            504,
            "upstream_timeout",
            "the upstream did not accept the connection in time",
        ),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Reply::error(
            504,
            "upstream_timeout",
            "the upstream did not answer in time",
        ),
        _ => match e.esource() {
            pingora::ErrorSource::Upstream => Reply::error(
                502,
                "upstream_unavailable",
                "the upstream could not be reached",
            ),
            pingora::ErrorSource::Downstream => {
                Reply::error(400, "bad_request", "the request could not be read")
            }
            _ => Reply::error(
                500,
                "internal_error",
                "the gateway failed to handle the request",
            ),
        },
    }
}

/// The upstream this configuration proxies to, with its timeouts.
fn upstream_peer_of(state: &GatewayState) -> HttpPeer {
    let upstream = &state.config.upstream;
    let mut peer = HttpPeer::new(state.upstream_addr, upstream.tls, upstream.host.clone());
    peer.options.connection_timeout = Some(upstream.connect_timeout);
    peer.options.total_connection_timeout = Some(upstream.connect_timeout * 2);
    peer.options.read_timeout = Some(upstream.read_timeout);
    peer.options.write_timeout = Some(upstream.read_timeout);
    peer.options.idle_timeout = Some(upstream.idle_timeout);
    if upstream.http2 {
        // With TLS the upstream chooses by ALPN (h2 first); without, h2 only means prior
        // knowledge: Pingora opens h2c and never falls back to HTTP/1.1.
        peer.options.alpn = if upstream.tls { ALPN::H2H1 } else { ALPN::H2 };
    }
    peer
}

/// What the upstream sees of a request: payment headers never reach it; the verified payer does.
fn forwarding_headers(
    session: &Session,
    upstream_request: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    let state = &ctx.state;
    normalise::strip_headers(upstream_request, state);
    // The gateway read the body (and answered any `Expect: 100-continue` itself): the upstream
    // gets the body with the head.
    if session.as_ref().get_retry_buffer().is_some() {
        upstream_request.remove_header(&http::header::EXPECT);
    }
    let original_host = session
        .req_header()
        .headers
        .get(http::header::HOST)
        .cloned();
    upstream_request.insert_header(
        http::header::HOST,
        state.config.upstream.host_header.as_str(),
    )?;
    if let Some(host) = original_host {
        upstream_request.insert_header("X-Forwarded-Host", host)?;
    }
    let proto = if state.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    upstream_request.insert_header("X-Forwarded-Proto", proto)?;
    if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
        let ip = client.ip().to_string();
        let forwarded = match session
            .req_header()
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(previous) => format!("{previous}, {ip}"),
            None => ip,
        };
        upstream_request.insert_header("X-Forwarded-For", forwarded)?;
    }
    for name in [
        PAYMENT_SIGNATURE,
        X_PAYMENT,
        crate::payment::sign_in::SIGN_IN_WITH_X,
        "x-payment-payer",
        "x-payment-amount",
        "x-payment-network",
    ] {
        // Removing keeps a case map in sync; most requests carry none of these, so look first.
        if upstream_request.headers.contains_key(name) {
            upstream_request.remove_header(name);
        }
    }
    ctx.upstream_started = Some(Instant::now());
    if let Some(address) = &ctx.session.signed_in {
        // Served on an access grant: the upstream learns who, not an amount paid now.
        upstream_request.insert_header("X-Payment-Payer", address.as_str())?;
    }
    if let Some(payment) = &ctx.session.paid {
        upstream_request.insert_header("X-Payment-Payer", payment.verified.payer.as_str())?;
        upstream_request.insert_header("X-Payment-Amount", payment.verified.amount.to_string())?;
        upstream_request.insert_header("X-Payment-Network", payment.network.as_str())?;
    }
    Ok(())
}
