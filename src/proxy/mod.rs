//! The Pingora service: one request, top to bottom.
//!
//! ```text
//! request_filter ─ match route ─ free/unmatched ────────────────────────────────┐
//!                  └ priced ─ no payment header ──► 402 challenge (upstream untouched)
//!                            └ decode ─ match option ─ local checks ─ reserve ─ facilitator /verify
//!                                       (settle = "before": /settle now) ──────┤
//! upstream_peer ─ upstream_request_filter (Host, X-Forwarded-*, payer headers) ◄┘
//! response_filter ─ upstream < 400 ─ /settle ─ PAYMENT-RESPONSE ─ stream body
//!                 └ upstream ≥ 400 ─ pass through, nothing charged
//! fail_to_proxy ─ gateway replies (settlement failed, upstream down)
//! logging ─ release unsettled reservations, one log line per payment
//! ```
//! Refusals happen before the upstream is called; a payment is settled at most once per request
//! (retries after a settlement attempt are disabled).

mod idempotent;
mod limits;
mod pages;
mod reply;
mod server;

pub use pages::{escape, prefers_html, Pages, DISCOVERY_PATH};
pub use reply::Reply;
pub use server::{build_server, GatewayServer, GatewayState, StartError, UNMATCHED_LABEL};

use crate::config::UnmatchedPolicy;
use crate::facilitator::{Facilitator, FacilitatorError, FacilitatorRequest, SettlementStatus};
use crate::ops::journal::{rfc3339_now, Journal, JournalEntry, JournalError, PaymentState};
use crate::ops::metrics::{Metrics, RequestOutcome};
use crate::ops::{Health, InFlight};
use crate::payment::idempotency::{IdempotencyStore, InMemoryIdempotency};
use crate::payment::{check_payment, ReplayError, ReplayGuard, SettlementPolicy, VerifiedPayment};
use crate::pricing::{PricedRoute, RouteKind};
use crate::store::{LocalRateCounter, RateCounter};
use crate::x402::{
    encode_header_json, HeaderDecodeError, PaymentPayload, PAYMENT_SIGNATURE, X_PAYMENT,
};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The proxy service. Configuration is read through an atomic snapshot per request.
pub struct Gateway {
    state: Arc<ArcSwap<GatewayState>>,
    replay: Arc<dyn ReplayGuard>,
    journal: Option<Arc<dyn Journal>>,
    health: Arc<Health>,
    idempotency: Arc<dyn IdempotencyStore>,
    rates: Arc<dyn RateCounter>,
}

impl Gateway {
    pub fn new(
        state: Arc<ArcSwap<GatewayState>>,
        replay: Arc<dyn ReplayGuard>,
        journal: Option<Arc<dyn Journal>>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            state,
            replay,
            journal,
            health,
            idempotency: Arc::new(InMemoryIdempotency::new()),
            rates: Arc::new(LocalRateCounter::new()),
        }
    }

    /// Counts rate limits in `counter` instead of this process's memory.
    pub fn with_rate_counter(mut self, counter: Arc<dyn RateCounter>) -> Self {
        self.rates = counter;
        self
    }

    /// Keeps idempotent replies in `store` instead of this process's memory.
    pub fn with_idempotency(mut self, store: Arc<dyn IdempotencyStore>) -> Self {
        self.idempotency = store;
        self
    }

    /// Records a payment event durably; the caller's response waits for it.
    async fn record(
        &self,
        entry: Option<&JournalEntry>,
        state: PaymentState,
        reason: &str,
    ) -> bool {
        let (Some(journal), Some(entry)) = (&self.journal, entry) else {
            return true;
        };
        let mut line = entry.next(state);
        line.reason = reason.to_string();
        journal.append(line).await.is_ok()
    }
}

/// What happened to a payment, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Verified,
    Settled,
    NotCharged,
    SettleFailed,
    Unknown,
}

/// A verified payment travelling with its request.
struct PaymentInFlight {
    version: u8,
    verified: VerifiedPayment,
    request: FacilitatorRequest,
    policy: SettlementPolicy,
    network: String,
    /// Set once `/settle` was called: never call it twice, never retry the upstream after it.
    settle_attempted: bool,
    /// The encoded settlement header to add to the upstream response.
    settlement_header: Option<String>,
    transaction: String,
    /// The facilitator that verified the payment: the only one that may settle it.
    facilitator: Option<Arc<dyn Facilitator>>,
    /// `confirmed`, `pending` or `batched` once settled.
    settlement: &'static str,
    reservation_held: bool,
    outcome: Outcome,
    /// The journal line this payment's events are written from.
    entry: Option<JournalEntry>,
    /// Whether the journal holds a `verified` line that still needs a final state.
    journaled: bool,
    route_index: Option<usize>,
}

pub struct RequestCtx {
    state: Arc<GatewayState>,
    /// Index (file order) of the matched route.
    route_index: Option<usize>,
    /// Set where the gateway decides a request's fate itself; otherwise derived at the end.
    outcome: Option<RequestOutcome>,
    upstream_started: Option<Instant>,
    _in_flight: InFlight,
    payment: Option<PaymentInFlight>,
    /// A reply prepared by a later phase for `fail_to_proxy` to write.
    reply: Option<Reply>,
    /// The failure is a refusal the gateway chose (already logged), not a proxy error.
    refused: bool,
    started: Instant,
    /// Set when the payment carries a `payment-identifier` this request claimed.
    idempotent: Option<idempotent::IdempotentRequest>,
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
    /// The matched route's `match` string, for logs and the journal.
    fn route_label(&self) -> &str {
        self.route_index
            .and_then(|i| self.state.config.routes.get(i))
            .map_or("", |r| r.label())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The absolute URL of the requested resource, as buyers see it.
fn resource_url(state: &GatewayState, req: &RequestHeader) -> String {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    if let Some(base) = &state.config.server.public_url {
        return format!("{base}{path}");
    }
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let scheme = if state.config.server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{host}{path}")
}

/// A stable id for a payment's journal lines: the authorization's identity, hashed.
fn payment_id(replay_key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(replay_key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The error code of a facilitator failure, in replies and metrics.
fn facilitator_code(e: &FacilitatorError) -> &'static str {
    match e {
        FacilitatorError::Timeout(_) => "facilitator_timeout",
        FacilitatorError::Unreachable(_) => "facilitator_unavailable",
        FacilitatorError::Status { .. } => "facilitator_error",
        FacilitatorError::Garbage(_) => "facilitator_bad_response",
        FacilitatorError::Credentials(_) => "facilitator_credentials",
        FacilitatorError::RateLimited(_) => "facilitator_rate_limited",
        FacilitatorError::Unconfirmed { .. } => "settlement_unconfirmed",
    }
}

fn facilitator_failure(e: &FacilitatorError) -> Reply {
    let status = match e {
        FacilitatorError::Timeout(_) => 504,
        // The settlement did not become final in time: the buyer is refused, not the gateway.
        FacilitatorError::Unconfirmed { .. } => 402,
        _ => 502,
    };
    Reply::error(status, facilitator_code(e), &e.client_message())
}

impl Gateway {
    /// Decides a priced request: `Ok(None)` lets it through to the upstream (payment verified and
    /// stored in `ctx`), `Ok(Some(reply))` answers it here.
    async fn admit_paid_request(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: &PricedRoute,
    ) -> Option<Reply> {
        let req = session.req_header();
        let url = resource_url(&ctx.state, req);
        let method = req.method.as_str().to_string();
        let header = req
            .headers
            .get(PAYMENT_SIGNATURE)
            .or_else(|| req.headers.get(X_PAYMENT));
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let Some(header) = header else {
            if let Some(reply) = self.rate_limited(ctx, client_ip, None).await {
                ctx.outcome = Some(RequestOutcome::Refused);
                return Some(reply);
            }
            ctx.outcome = Some(RequestOutcome::Challenged);
            let error = "Payment required: send PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (x402 v1)";
            let reply = Reply::challenge(402, route, &url, &method, error, None);
            let wants_html = req
                .headers
                .get(http::header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(prefers_html);
            let paywall = ctx
                .route_index
                .and_then(|i| ctx.state.pages.paywalls.get(i))
                .and_then(Option::as_ref);
            return Some(match (wants_html, paywall) {
                (true, Some(page)) => reply.with_html(page.render(&url)),
                _ => reply,
            });
        };
        let header_name = if req.headers.contains_key(PAYMENT_SIGNATURE) {
            "PAYMENT-SIGNATURE"
        } else {
            "X-PAYMENT"
        };
        let network = route
            .options
            .first()
            .map_or("", |o| o.requirements.network.as_str());
        let fmetrics = ctx.state.facilitator_metrics_for(network);

        let decoded: Result<(serde_json::Value, serde_json::Value), HeaderDecodeError> =
            crate::x402::decode_header_json(header.as_bytes());
        let payload = decoded
            .map_err(|e| e.to_string())
            .and_then(|(_, raw)| PaymentPayload::from_json(&raw).map(|p| (p, raw)));
        let (payment, raw) = match payload {
            Ok(ok) => ok,
            Err(message) => {
                ctx.outcome = Some(RequestOutcome::Refused);
                fmetrics.failed("invalid_payment_header");
                let message = format!("{header_name} header cannot be read: {message}");
                let mut reply = Reply::challenge(
                    400,
                    route,
                    &url,
                    &method,
                    "invalid_payment_header",
                    Some(&message),
                );
                reply.body = bytes::Bytes::from(
                    serde_json::json!({"error": "invalid_payment_header", "message": message})
                        .to_string(),
                );
                return Some(reply);
            }
        };

        // Before anything else, so that a resend of a delivered payment gets its response back.
        let settings = ctx.state.config.idempotency;
        // Bound to the path, not the host: replicas behind one name see different hosts.
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        match self.claim_identifier(settings, &raw, &method, target).await {
            Ok(claimed) => ctx.idempotent = claimed,
            Err((outcome, reply)) => {
                ctx.outcome = Some(outcome);
                return Some(reply);
            }
        }

        let now = unix_now();
        let verified = match check_payment(route, &payment, now) {
            Ok(v) => v,
            Err(rejection) => {
                ctx.outcome = Some(RequestOutcome::Refused);
                fmetrics.failed(rejection.reason);
                return Some(Reply::challenge(
                    402,
                    route,
                    &url,
                    &method,
                    rejection.reason,
                    Some(&rejection.message),
                ));
            }
        };

        if let Some(reply) = self
            .rate_limited(ctx, client_ip, Some(&verified.payer))
            .await
        {
            ctx.outcome = Some(RequestOutcome::Refused);
            return Some(reply);
        }

        if let Err(e) = self
            .replay
            .reserve(&verified.replay_key, verified.valid_before, now)
            .await
        {
            ctx.outcome = Some(RequestOutcome::Refused);
            if e != ReplayError::Unavailable {
                Metrics::global().replays_refused.inc();
            }
            return Some(match e {
                ReplayError::InFlight => {
                    fmetrics.failed("payment_in_progress");
                    Reply::error(409, "payment_in_progress", &e.to_string())
                }
                ReplayError::Unavailable => {
                    fmetrics.failed("replay_store_unavailable");
                    ctx.outcome = Some(RequestOutcome::Error);
                    Reply::unavailable("replay_store_unavailable", &e.to_string())
                }
                ReplayError::AlreadySettled => {
                    fmetrics.failed("payment_already_used");
                    Reply::challenge(
                        402,
                        route,
                        &url,
                        &method,
                        "payment_already_used",
                        Some(&e.to_string()),
                    )
                }
            });
        }

        let option = &route.options[verified.option_index];
        let requirements = match payment.version() {
            1 => serde_json::to_value(option.v1_requirements(
                &url,
                &route.description,
                &route.mime_type,
                &method,
            )),
            _ => serde_json::to_value(&option.requirements),
        }
        .unwrap_or_default();
        let request = FacilitatorRequest {
            x402_version: payment.version(),
            payment_payload: raw,
            payment_requirements: requirements,
            sync_settle: route.sync_settle,
            resource: Some(crate::x402::ResourceInfo {
                url: url.clone(),
                description: route.description.clone(),
                mime_type: route.mime_type.clone(),
            }),
        };
        let entry = self.journal.as_ref().map(|_| JournalEntry {
            time: rfc3339_now(),
            id: payment_id(&verified.replay_key.to_hex()),
            state: PaymentState::Verified,
            route: ctx.route_label().to_string(),
            payer: verified.payer.clone(),
            amount: verified.amount.to_string(),
            asset: option.requirements.asset.clone(),
            network: option.requirements.network.clone(),
            pay_to: option.requirements.pay_to.clone(),
            transaction: String::new(),
            // Filled in with the facilitator that verifies (the network's, or its fallback).
            facilitator: String::new(),
            reason: String::new(),
            key: verified.replay_key.to_hex(),
            valid_before: verified.valid_before,
            settle_request: String::new(),
        });
        ctx.payment = Some(PaymentInFlight {
            version: payment.version(),
            verified,
            request,
            policy: route.settle,
            network: option.requirements.network.clone(),
            settle_attempted: false,
            settlement_header: None,
            transaction: String::new(),
            facilitator: None,
            settlement: "",
            reservation_held: true,
            outcome: Outcome::Verified,
            entry,
            journaled: false,
            route_index: ctx.route_index,
        });

        let state = ctx.state.clone();
        let payment = ctx.payment.as_mut()?;
        let verify_started = Instant::now();
        let Some(verdict) = state
            .facilitators
            .verify(&payment.network, &payment.request)
            .await
        else {
            ctx.outcome = Some(RequestOutcome::Error);
            let message = format!("no facilitator serves network {}", payment.network);
            return Some(Reply::error(502, "facilitator_unavailable", &message));
        };
        let facilitator = verdict.facilitator;
        let fmetrics = state.facilitator_metrics_named(facilitator.name());
        fmetrics
            .verify_seconds
            .observe(verify_started.elapsed().as_secs_f64());
        payment.facilitator = Some(facilitator.clone());
        if let Some(entry) = payment.entry.as_mut() {
            entry.facilitator = facilitator.name().to_string();
        }
        match verdict.result {
            Err(e) => {
                tracing::warn!(facilitator = facilitator.name(), error = %e, "verify failed");
                let reply = facilitator_failure(&e);
                fmetrics.failed(facilitator_code(&e));
                ctx.outcome = Some(RequestOutcome::Error);
                return Some(reply);
            }
            Ok(v) if !v.is_valid => {
                let reason = v.invalid_reason.as_deref().unwrap_or("payment_invalid");
                fmetrics.failed(reason);
                ctx.outcome = Some(RequestOutcome::Refused);
                let message = v
                    .invalid_message
                    .clone()
                    .unwrap_or_else(|| format!("the facilitator refused the payment: {reason}"));
                return Some(Reply::challenge(
                    402,
                    route,
                    &url,
                    &method,
                    reason,
                    Some(&message),
                ));
            }
            Ok(_) => fmetrics.verified.inc(),
        }

        let recorded = match (&self.journal, payment.entry.as_ref()) {
            (Some(journal), Some(entry)) => {
                journal.append(entry.next(PaymentState::Verified)).await
            }
            _ => Ok(()),
        };
        if let Err(e) = recorded {
            // A shared journal knows authorizations this replica's replay guard has not seen.
            let reply = match e {
                JournalError::AlreadyRecorded {
                    state: PaymentState::Verified,
                } => Reply::error(409, "payment_in_progress", &e.to_string()),
                JournalError::AlreadyRecorded { .. } => Reply::challenge(
                    402,
                    route,
                    &url,
                    &method,
                    "payment_already_used",
                    Some("this payment authorization was already used"),
                ),
                _ => Reply::error(
                    503,
                    "journal_unavailable",
                    "the payment cannot be recorded right now; nothing was charged",
                ),
            };
            if reply.status == 503 {
                ctx.outcome = Some(RequestOutcome::Error);
            } else {
                ctx.outcome = Some(RequestOutcome::Refused);
                Metrics::global().replays_refused.inc();
            }
            return Some(reply);
        }
        payment.journaled = self.journal.is_some();

        if payment.policy == SettlementPolicy::Before {
            return self.settle(&state, payment).await;
        }
        None
    }

    /// Settles `payment` once. `None` on success (the header is stored), else the reply to send.
    /// The journal line is on disk before this returns, so before any response depending on it.
    async fn settle(&self, state: &GatewayState, payment: &mut PaymentInFlight) -> Option<Reply> {
        if payment.settle_attempted {
            return None;
        }
        payment.settle_attempted = true;
        // Only the facilitator that verified a payment may settle it.
        let Some(facilitator) = payment.facilitator.clone() else {
            payment.outcome = Outcome::SettleFailed;
            return Some(Reply::error(
                502,
                "facilitator_unavailable",
                "no facilitator verified this payment",
            ));
        };
        let fmetrics = state.facilitator_metrics_named(facilitator.name());
        let started = Instant::now();
        let result = facilitator.settle(&payment.request).await;
        fmetrics
            .settle_seconds
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(settlement) if settlement.response.success => {
                self.replay.mark_settled(&payment.verified.replay_key).await;
                payment.outcome = Outcome::Settled;
                payment.transaction = settlement.response.transaction.clone();
                payment.settlement = settlement.status.as_str();
                payment.settlement_header = Some(encode_header_json(&settlement.raw));
                fmetrics.settled.inc();
                // Counted when the money moves, whatever happens to the response afterwards.
                if let Some(revenue) = payment
                    .route_index
                    .and_then(|i| state.route_metrics.get(i))
                    .and_then(|m| m.revenue.get(payment.verified.option_index))
                {
                    revenue.inc_by(u64::try_from(payment.verified.amount).unwrap_or(u64::MAX));
                }
                // Some facilitators answer before the chain confirms; those are reconciled later.
                let final_state = match settlement.status {
                    SettlementStatus::Confirmed => PaymentState::Settled,
                    SettlementStatus::Pending | SettlementStatus::Batched => PaymentState::Pending,
                };
                if let Some(entry) = payment.entry.as_mut() {
                    entry.transaction = payment.transaction.clone();
                }
                self.record(payment.entry.as_ref(), final_state, "").await;
                payment.journaled = false;
                None
            }
            Ok(settlement) => {
                payment.outcome = Outcome::SettleFailed;
                let reason = settlement
                    .response
                    .error_reason
                    .clone()
                    .unwrap_or_else(|| "settlement_failed".into());
                fmetrics.failed(&reason);
                let message = settlement
                    .response
                    .error_message
                    .clone()
                    .unwrap_or_else(|| {
                        format!("the facilitator could not settle the payment: {reason}")
                    });
                tracing::warn!(payer = %payment.verified.payer, %reason, "settlement refused");
                self.record(payment.entry.as_ref(), PaymentState::Failed, &reason)
                    .await;
                payment.journaled = false;
                Some(
                    Reply::error(402, &reason, &message)
                        .with_settlement(payment.version, encode_header_json(&settlement.raw)),
                )
            }
            Err(e) => {
                tracing::error!(facilitator = facilitator.name(), error = %e, payer = %payment.verified.payer, "settlement failed");
                let reply = facilitator_failure(&e);
                let code = facilitator_code(&e);
                fmetrics.failed(code);
                if e.never_sent() {
                    payment.outcome = Outcome::SettleFailed;
                    self.record(payment.entry.as_ref(), PaymentState::Failed, code)
                        .await;
                } else {
                    // The facilitator may have settled: keep the authorization refused so it can
                    // never be spent twice, and do not deliver the content.
                    self.replay.keep_unknown(&payment.verified.replay_key).await;
                    payment.outcome = Outcome::Unknown;
                    if let Some(entry) = payment.entry.as_mut() {
                        entry.settle_request =
                            serde_json::to_string(&payment.request).unwrap_or_default();
                    }
                    self.record(payment.entry.as_ref(), PaymentState::Pending, code)
                        .await;
                }
                payment.journaled = false;
                Some(reply)
            }
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
            outcome: None,
            upstream_started: None,
            _in_flight: InFlight::start(&self.health),
            payment: None,
            reply: None,
            refused: false,
            started: Instant::now(),
            idempotent: None,
        }
    }

    /// Phase 1: decide whether the request may reach the upstream at all.
    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<bool> {
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
            let served = state.config.routes.find(&asked, req.uri.path()).is_some();
            if served || state.config.unmatched == UnmatchedPolicy::Proxy {
                return Ok(false);
            }
        }
        let matched = state.config.routes.find(&req.method, req.uri.path());
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
                    RouteKind::Free => None,
                    RouteKind::Priced(priced) => {
                        self.admit_paid_request(session, ctx, priced).await
                    }
                }
            }
        };
        match reply {
            Some(reply) => {
                reply.write(session).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        let upstream = &ctx.state.config.upstream;
        let mut peer = HttpPeer::new(ctx.state.upstream_addr, upstream.tls, upstream.host.clone());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.total_connection_timeout = Some(upstream.connect_timeout * 2);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.read_timeout);
        peer.options.idle_timeout = Some(upstream.idle_timeout);
        Ok(Box::new(peer))
    }

    /// Phase 2: what the upstream sees. Payment headers never reach it; the verified payer does.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        let state = &ctx.state;
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
        if let Some(payment) = &ctx.payment {
            upstream_request.insert_header("X-Payment-Payer", payment.verified.payer.as_str())?;
            upstream_request
                .insert_header("X-Payment-Amount", payment.verified.amount.to_string())?;
            upstream_request.insert_header("X-Payment-Network", payment.network.as_str())?;
        }
        Ok(())
    }

    /// Phase 3: settle after a successful upstream answer, before its header goes downstream.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        if let Some(started) = ctx.upstream_started.take() {
            Metrics::global()
                .upstream_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        let state = ctx.state.clone();
        let Some(payment) = ctx.payment.as_mut() else {
            return Ok(());
        };
        if payment.policy == SettlementPolicy::AfterSuccess && !payment.settle_attempted {
            if !SettlementPolicy::upstream_succeeded(upstream_response.status.as_u16()) {
                payment.outcome = Outcome::NotCharged;
                return Ok(());
            }
            if let Some(reply) = self.settle(&state, payment).await {
                let status = reply.status;
                ctx.reply = Some(reply);
                ctx.refused = true;
                return Err(Error::explain(
                    ErrorType::HTTPStatus(status),
                    "settlement did not succeed",
                ));
            }
        }
        if let Some(header) = payment.settlement_header.as_deref() {
            let name = reply::settlement_header(payment.version);
            upstream_response.insert_header(name, header)?;
            upstream_response.insert_header(
                "Access-Control-Expose-Headers",
                crate::x402::EXPOSED_HEADERS,
            )?;
        }
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
        let settled = ctx.payment.as_ref().is_some_and(|p| p.settle_attempted);
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
        ctx.refused
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let reply = ctx.reply.take().unwrap_or_else(|| match e.etype() {
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
        });
        let downstream_gone = matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        ) && e.esource() == &pingora::ErrorSource::Downstream;
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
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let state = ctx.state.clone();
        let route_metrics = match ctx.route_index {
            Some(i) => state.route_metrics.get(i),
            None => Some(&state.unmatched_metrics),
        };
        if let (402, Some(m)) = (status, route_metrics) {
            m.payment_required.inc();
        }
        self.finish_identifier(ctx).await;
        let route_label = ctx
            .route_index
            .and_then(|i| state.config.routes.get(i))
            .map_or("", |r| r.label());
        let Some(payment) = ctx.payment.as_mut() else {
            let outcome = ctx.outcome.unwrap_or(if status >= 500 || status == 0 {
                RequestOutcome::Error
            } else {
                RequestOutcome::Free
            });
            if let Some(m) = route_metrics {
                m.outcome(outcome).inc();
            }
            return;
        };
        if payment.reservation_held
            && !matches!(payment.outcome, Outcome::Settled | Outcome::Unknown)
        {
            self.replay.release(&payment.verified.replay_key).await;
            payment.reservation_held = false;
            if payment.outcome == Outcome::Verified {
                payment.outcome = Outcome::NotCharged;
            }
        }
        if payment.journaled && payment.outcome == Outcome::NotCharged {
            self.record(payment.entry.as_ref(), PaymentState::NotCharged, "")
                .await;
            payment.journaled = false;
        }
        let outcome = ctx.outcome.unwrap_or(match payment.outcome {
            Outcome::Settled => RequestOutcome::Paid,
            Outcome::NotCharged => RequestOutcome::NotCharged,
            Outcome::SettleFailed | Outcome::Unknown => RequestOutcome::SettleFailed,
            Outcome::Verified => RequestOutcome::Error,
        });
        if let Some(m) = route_metrics {
            m.outcome(outcome).inc();
        }
        tracing::info!(
            route = route_label,
            payer = %payment.verified.payer,
            amount = %payment.verified.amount,
            network = %payment.network,
            tx = %payment.transaction,
            settlement = payment.settlement,
            outcome = ?payment.outcome,
            status,
            error = e.map(|e| format!("{:?}", e.etype())).unwrap_or_default(),
            latency_ms = ctx.started.elapsed().as_millis() as u64,
            "payment"
        );
    }
}
