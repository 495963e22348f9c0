//! Admission of a priced request: the challenge when no payment is sent, the local checks, the
//! reservation, and the facilitator's verdict fed to the payment's lifecycle.

use super::claims::Refused;
use super::idempotent::read_identifier;
use super::reply::Reply;
use super::settlement::{payment_reply, AccessTerms, MeteredTerms, PaidRequest};
use super::{Gateway, GatewayState, RequestCtx};
use crate::facilitator::FacilitatorRequest;
use crate::metrics::Metrics;
use crate::ops::journal::JournalEntry;
use crate::payment::sign_in::{
    check_sign_in, decode_sign_in, sign_in_declaration, SignInChallenge, SignInRefusal,
    SignInTerms, SIGN_IN_WITH_X,
};
use crate::payment::{
    challenge_status, check_extension_echo, check_payment, judge_verify, reservation_refused,
    Answer, Event, Failure, Lifecycle, Outcome, PaymentState, SettlementPolicy, VerifyReply,
    VerifyVerdict, FACILITATOR_ADDRESS_KEY,
};
use crate::pricing::{PricedRoute, VerifyPolicy};
use crate::state::prefers_html;
use crate::time::rfc3339_now;
use crate::time::{unix_now, unix_now_ms};
use crate::x402::{PaymentPayload, PAYMENT_SIGNATURE, UPTO, X_PAYMENT};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::time::Instant;

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

/// A decoded payment and what it pays for.
pub(super) struct PaymentOffer<'a> {
    /// The resource URL challenges and the facilitator request name.
    pub url: &'a str,
    /// The method the request is priced as.
    pub method: &'a str,
    /// What a `payment-identifier` is bound to (the path and query, or the MCP item).
    pub target: &'a str,
    /// The canonical path the request is priced as: what an access grant covers.
    pub path: &'a str,
    pub payment: PaymentPayload,
    pub raw: serde_json::Value,
}

/// Why a sign-in was not accepted.
enum AccessRefusal {
    Refused(SignInRefusal),
    /// The store of grants and nonces did not answer: refused, never let through.
    Unavailable(crate::store::StoreError),
}

/// The configured public URL as a sign-in names it.
struct PublicOrigin {
    /// `scheme://host[:port]`.
    origin: String,
    /// `host[:port]`, the port only when it is not the scheme's default.
    host: String,
}

impl PublicOrigin {
    fn of(public_url: &str) -> Option<Self> {
        let parsed = url::Url::parse(public_url).ok()?;
        let host = parsed.host_str()?;
        let host = match parsed.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        Some(Self {
            origin: parsed.origin().ascii_serialization(),
            host,
        })
    }
}

/// A sign-in nonce: 128 random bits in hex.
fn fresh_nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What an access grant of a route covers: the route and the canonical path bought.
pub(super) fn access_resource(route_label: &str, canonical_path: &str) -> String {
    format!("{route_label} {canonical_path}")
}

/// A stable id for a payment's journal lines: the authorization's identity, hashed.
fn payment_id(replay_key: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(replay_key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The configured requirements could not be written as JSON for the facilitator.
#[derive(Debug, thiserror::Error)]
#[error("the payment requirements cannot be written for the facilitator: {0}")]
pub(super) struct RequirementsUnwritable(#[from] serde_json::Error);

/// The `/verify` and `/settle` body of a payment. Requirements that cannot be written are an
/// error: a facilitator sent `null` requirements would judge the payment against nothing.
pub(super) fn facilitator_request(
    version: u8,
    payment_payload: serde_json::Value,
    requirements: &impl serde::Serialize,
    sync_settle: bool,
    resource: crate::x402::ResourceInfo,
) -> Result<FacilitatorRequest, RequirementsUnwritable> {
    Ok(FacilitatorRequest {
        x402_version: version,
        payment_payload,
        payment_requirements: serde_json::to_value(requirements)?,
        sync_settle,
        resource: Some(resource),
    })
}

/// The network of an `upto` option of `route` that no facilitator has named a settling address
/// for (read at start-up), if any.
fn unsettleable_upto(route: &PricedRoute) -> Option<&str> {
    route
        .options
        .iter()
        .map(|o| &o.requirements)
        .find(|r| r.scheme == UPTO && r.extra.get(FACILITATOR_ADDRESS_KEY).is_none())
        .map(|r| r.network.as_str())
}

impl Gateway {
    /// Decides a priced request: `None` lets it through to the upstream (the payment travels in
    /// `ctx`), `Some(reply)` answers it here. `priced_method` is the method the request is priced
    /// as (an override's, when that is priced): challenges and requirements name it, so that the
    /// buyer is asked for the resource it will actually be served.
    pub(super) async fn admit_paid_request(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: &PricedRoute,
        priced_method: &http::Method,
        path: &str,
    ) -> Option<Reply> {
        let req = session.req_header();
        let url = resource_url(&ctx.state, req);
        let method = priced_method.as_str();
        let header = req
            .headers
            .get(PAYMENT_SIGNATURE)
            .or_else(|| req.headers.get(X_PAYMENT));
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        if let Some(network) = super::batch::unpayable_batch(route) {
            // Buyers name the receiver authorizer in their channel: without it no channel can be
            // opened nor a claim signed. Nothing reaches the upstream.
            ctx.session.count_as(Outcome::Error);
            tracing::warn!(%network, "a batch-settlement route was asked for while no facilitator has named its receiver authorizer");
            return Some(Reply::unavailable(
                Failure::FacilitatorUnavailable.code(),
                Failure::FacilitatorUnavailable.message(),
            ));
        }
        if let Some(network) = unsettleable_upto(route) {
            // Buyers sign the settling facilitator's address into an `upto` authorization: without
            // it no challenge can be answered and no payment settled. Nothing reaches the upstream.
            ctx.session.count_as(Outcome::Error);
            tracing::warn!(%network, "a metered route was asked for while no facilitator has named its `upto` address");
            return Some(Reply::unavailable(
                Failure::FacilitatorUnavailable.code(),
                Failure::FacilitatorUnavailable.message(),
            ));
        }
        let Some(header) = header else {
            if let Some(reply) = self.rate_limited(ctx, client_ip, None).await {
                ctx.session.count_as(Outcome::Refused);
                return Some(reply);
            }
            let sign_in = req.headers.get(SIGN_IN_WITH_X);
            if let (Some(_), Some(sign_in)) = (route.access, sign_in) {
                match self
                    .check_access(ctx, route, sign_in.as_bytes(), path)
                    .await
                {
                    Ok(address) => {
                        tracing::debug!(payer = %address, "signed in with an access grant");
                        ctx.session.count_as(Outcome::SignedIn);
                        ctx.session.signed_in = Some(address);
                        return None;
                    }
                    Err(AccessRefusal::Refused(refusal)) => {
                        tracing::info!(code = refusal.code, reason = %refusal.message, "sign-in refused");
                        ctx.session.count_as(Outcome::Refused);
                        let reply = Reply::challenge(
                            402,
                            route,
                            &url,
                            method,
                            refusal.code,
                            Some(&refusal.message),
                        );
                        return Some(self.with_sign_in(reply, ctx, route, &url));
                    }
                    Err(AccessRefusal::Unavailable(e)) => {
                        tracing::warn!(error = %e, "the sign-in store did not answer; sign-in refused");
                        ctx.session.count_as(Outcome::Error);
                        return Some(Reply::unavailable(
                            "replay_store_unavailable",
                            "sign-ins cannot be checked right now; retry shortly, or pay",
                        ));
                    }
                }
            }
            ctx.session.count_as(Outcome::Challenged);
            let error = "Payment required: send PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (x402 v1)";
            let reply = Reply::challenge(402, route, &url, method, error, None);
            let reply = self.with_sign_in(reply, ctx, route, &url);
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

        let payload = crate::x402::decode_header_json::<serde_json::Value>(header.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|(_, raw)| PaymentPayload::from_json(&raw).map(|p| (p, raw)));
        let (payment, raw) = match payload {
            Ok(ok) => ok,
            Err(message) => {
                ctx.session.count_as(Outcome::Refused);
                fmetrics.failed("invalid_payment_header");
                let message = format!("{header_name} header cannot be read: {message}");
                let mut reply = Reply::challenge(
                    400,
                    route,
                    &url,
                    method,
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

        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let batch = matches!(payment, PaymentPayload::Batch(_));
        let paid = PaymentOffer {
            url: &url,
            method,
            target,
            path,
            payment,
            raw,
        };
        if batch {
            if let Some(reply) = self.rate_limited(ctx, client_ip, None).await {
                ctx.session.count_as(Outcome::Refused);
                return Some(reply);
            }
            // Boxed, as are the other phases only some routes take: inline, their futures would
            // enlarge (and be copied with) every paid request's.
            return Box::pin(self.admit_batch(ctx, route, paid)).await;
        }
        self.admit_payment(session, ctx, route, paid).await
    }

    /// Adds the sign-in challenge (a fresh nonce) to a challenge of a route with an access window.
    fn with_sign_in(
        &self,
        reply: Reply,
        ctx: &RequestCtx,
        route: &PricedRoute,
        url: &str,
    ) -> Reply {
        let (Some(_), Some(public)) = (route.access, &ctx.state.config.server.public_url) else {
            return reply;
        };
        let Some(origin) = PublicOrigin::of(public) else {
            return reply;
        };
        let networks: Vec<String> = route
            .options
            .iter()
            .map(|o| o.requirements.network.clone())
            .collect();
        let nonce = fresh_nonce();
        let declaration = sign_in_declaration(SignInChallenge {
            host: &origin.host,
            resource_url: url,
            networks: &networks,
            nonce: &nonce,
            now_ms: unix_now_ms(),
            statement: None,
        });
        reply.with_extension(SIGN_IN_WITH_X, declaration)
    }

    /// What a payment must echo of the route's sign-in challenge: the declaration without its
    /// per-challenge fields (nonce and times), which the echo check leaves free, as the official
    /// server does. `None` for routes without an access window.
    fn sign_in_echo(ctx: &RequestCtx, route: &PricedRoute, url: &str) -> Option<serde_json::Value> {
        route.access?;
        let origin = PublicOrigin::of(ctx.state.config.server.public_url.as_deref()?)?;
        let networks: Vec<String> = route
            .options
            .iter()
            .map(|o| o.requirements.network.clone())
            .collect();
        Some(sign_in_declaration(SignInChallenge {
            host: &origin.host,
            resource_url: url,
            networks: &networks,
            nonce: "",
            now_ms: 0,
            statement: None,
        }))
    }

    /// Checks a sign-in to a route with an access window: the message (see
    /// [`check_sign_in`]), then the payer's grant for this resource, then the nonce's single use.
    /// `Ok` is the signed-in address.
    async fn check_access(
        &self,
        ctx: &RequestCtx,
        route: &PricedRoute,
        header: &[u8],
        path: &str,
    ) -> Result<String, AccessRefusal> {
        let origin = ctx
            .state
            .config
            .server
            .public_url
            .as_deref()
            .and_then(PublicOrigin::of)
            .ok_or_else(|| {
                AccessRefusal::Refused(SignInRefusal {
                    code: "invalid_siwx_domain_mismatch",
                    message: "this gateway has no public URL to sign in to".into(),
                })
            })?;
        let networks: Vec<String> = route
            .options
            .iter()
            .map(|o| o.requirements.network.clone())
            .collect();
        let now = unix_now_ms();
        let payload = decode_sign_in(header).map_err(AccessRefusal::Refused)?;
        let terms = SignInTerms {
            origin: &origin.origin,
            host: &origin.host,
            networks: &networks,
        };
        let signed = check_sign_in(&payload, terms, now).map_err(AccessRefusal::Refused)?;
        let resource = access_resource(&ctx.route_label(), path);
        let granted = self
            .sign_in
            .granted(&resource, &signed.address, now)
            .await
            .map_err(AccessRefusal::Unavailable)?;
        if !granted {
            return Err(AccessRefusal::Refused(SignInRefusal {
                code: "access_not_granted",
                message:
                    "this wallet has no access to this resource: pay for it once, then sign in"
                        .into(),
            }));
        }
        let fresh = self
            .sign_in
            .use_nonce(&signed.nonce, signed.usable_until_ms, now)
            .await
            .map_err(AccessRefusal::Unavailable)?;
        if !fresh {
            return Err(AccessRefusal::Refused(SignInRefusal {
                code: "invalid_siwx_nonce",
                message: "this sign-in was used already; sign the new challenge".into(),
            }));
        }
        Ok(signed.address)
    }

    /// Decides a decoded payment for `route`: identifier, local checks, claims, the
    /// facilitator's verdict. `None` lets the request through with the payment in `ctx`.
    pub(super) async fn admit_payment(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        route: &PricedRoute,
        offer: PaymentOffer<'_>,
    ) -> Option<Reply> {
        let PaymentOffer {
            url,
            method,
            target,
            path,
            payment,
            raw,
        } = offer;
        let client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let network = route
            .options
            .first()
            .map_or("", |o| o.requirements.network.as_str());
        let fmetrics = ctx.state.facilitator_metrics_for(network);

        // Before anything else, so that a resend of a delivered payment gets its response back.
        let settings = ctx.state.config.idempotency;
        // Bound to the path, not the host: replicas behind one name see different hosts.
        let identifier = match read_identifier(settings, &raw, method, target) {
            Ok(identifier) => identifier,
            Err((outcome, reply)) => {
                ctx.session.count_as(outcome);
                return Some(reply);
            }
        };

        let now = unix_now();
        // The echo first: a payment that rewrites what the route declared is refused before any
        // facilitator hears of it, as the official server does.
        let mut declared = route.declared_extensions(method, url);
        if let Some(sign_in) = Self::sign_in_echo(ctx, route, url) {
            declared.to_mut().insert(SIGN_IN_WITH_X.into(), sign_in);
        }
        let checked = check_extension_echo(&declared, &raw)
            .and_then(|()| check_payment(route, &payment, now));
        let verified = match checked {
            Ok(v) => v,
            Err(rejection) => {
                // Off the hot path: its identifier alone, so that a resend of a delivered
                // payment (now expired, say) still gets its response.
                if let Some(identifier) = identifier {
                    match self.claim_identifier(identifier).await {
                        Ok(claimed) => ctx.session.identifier = Some(claimed),
                        Err((outcome, reply)) => {
                            ctx.session.count_as(outcome);
                            return Some(reply);
                        }
                    }
                }
                ctx.session.count_as(Outcome::Refused);
                fmetrics.failed(rejection.reason);
                return Some(Reply::challenge(
                    402,
                    route,
                    url,
                    method,
                    rejection.reason,
                    Some(&rejection.message),
                ));
            }
        };

        // Rate limits, identifier and reservation: one exchange with the store.
        let claimed = self
            .claim_admission(ctx, client_ip, identifier, &verified, now)
            .await;
        let refused = match claimed {
            Ok(claimed) => {
                ctx.session.identifier = claimed;
                None
            }
            Err(Refused::Reply(outcome, reply)) => {
                ctx.session.count_as(outcome);
                return Some(reply);
            }
            Err(Refused::Replay(e)) => Some(e),
        };
        if let Some(e) = refused {
            let refusal = reservation_refused(&e);
            ctx.session.count_as(refusal.outcome);
            fmetrics.failed(refusal.code);
            if refusal.replay {
                Metrics::global().replays_refused.inc();
            }
            let message = e.to_string();
            return Some(if refusal.challenge {
                Reply::challenge(
                    refusal.status,
                    route,
                    url,
                    method,
                    refusal.code,
                    Some(&message),
                )
            } else if refusal.retry {
                Reply::unavailable(refusal.code, &message)
            } else {
                Reply::error(refusal.status, refusal.code, &message)
            });
        }

        let option = &route.options[verified.option_index];
        let resource = crate::x402::ResourceInfo {
            url: url.to_string(),
            description: route.description.clone(),
            mime_type: route.mime_type.clone(),
        };
        let version = payment.version();
        let request = match version {
            1 => facilitator_request(
                version,
                raw,
                &option.v1_requirements(url, &route.description, &route.mime_type, method),
                route.sync_settle,
                resource,
            ),
            _ => facilitator_request(
                version,
                raw,
                &option.requirements,
                route.sync_settle,
                resource,
            ),
        };
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                // Nothing was sent and nothing is charged: the authorization is given back and the
                // upstream is not called (the identifier claim is abandoned when the request
                // ends, as no payment is under way).
                tracing::error!(route = ctx.route_label(), error = %e, "cannot build the facilitator request");
                self.replay.release(&verified.replay_key).await;
                fmetrics.failed("internal_error");
                ctx.session.count_as(Outcome::Error);
                return Some(Reply::error(
                    500,
                    "internal_error",
                    "the gateway failed to handle the payment; nothing was charged",
                ));
            }
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
        let state = ctx.state.clone();
        let settles_with_identifier = ctx.session.identifier.is_some();
        let payment = ctx.session.paid.insert(Box::new(PaidRequest {
            version: payment.version(),
            verified,
            request,
            network: option.requirements.network.clone(),
            life: {
                let life = Lifecycle::new(route.settle);
                let life = if settles_with_identifier {
                    life.identified()
                } else {
                    life
                };
                if route.access.is_some() {
                    life.granting_access()
                } else {
                    life
                }
            },
            facilitator: None,
            receipt: None,
            transaction: String::new(),
            entry,
            route_index: ctx.route_index,
            item_index: ctx.mcp_item,
            access: route.access.map(|window| {
                Box::new(AccessTerms {
                    resource: access_resource(&ctx.route_label(), path),
                    window,
                })
            }),
            batch: None,
            answer_cut: false,
            metered: route
                .metering
                .as_deref()
                .cloned()
                .filter(|_| option.requirements.scheme == UPTO)
                .map(|metering| {
                    Box::new(MeteredTerms {
                        metering,
                        requirements: option.requirements.clone(),
                        decimals: option.decimals,
                    })
                }),
        }));

        let event =
            if route.settle == SettlementPolicy::Before || route.verify == VerifyPolicy::Local {
                // The up-front flow makes no `/verify` call: the facilitator's `/settle` verifies.
                // Neither does `verify = "local"`: the local checks above stand in for it.
                payment.facilitator = state.facilitators.for_network(&payment.network);
                match &payment.facilitator {
                    Some(_) => Event::Accepted,
                    None => Event::VerifyFailed(Failure::FacilitatorUnavailable),
                }
            } else {
                self.verify(&state, payment).await.0
            };
        if let (Some(entry), Some(f)) = (payment.entry.as_mut(), &payment.facilitator) {
            entry.facilitator = f.name().to_string();
        }
        let answer = self.advance(&state, payment, event).await;
        admission_reply(answer, payment, route, url, method)
    }

    /// Asks the facilitator to verify `payment` (the network's, or its fallback) and judges the
    /// answer: the event to feed, and the answer's scheme-specific `extra`.
    pub(super) async fn verify(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
    ) -> (Event, Option<serde_json::Value>) {
        let mut extra = None;
        let verify_started = Instant::now();
        let event = match state
            .facilitators
            .verify(&payment.network, &payment.request)
            .await
        {
            None => Event::VerifyFailed(Failure::FacilitatorUnavailable),
            Some(verdict) => {
                let facilitator = verdict.facilitator;
                let fmetrics = state.facilitator_metrics_named(facilitator.name());
                fmetrics
                    .verify_seconds
                    .observe(verify_started.elapsed().as_secs_f64());
                payment.facilitator = Some(facilitator.clone());
                match verdict.result {
                    Err(e) => {
                        tracing::warn!(facilitator = facilitator.name(), error = %e, "verify failed");
                        fmetrics.failed(e.failure().code());
                        Event::VerifyFailed(e.failure())
                    }
                    Ok(v) => {
                        extra = v.extra.clone();
                        let reply = VerifyReply {
                            is_valid: v.is_valid,
                            invalid_reason: v.invalid_reason.as_deref(),
                            payer: v.payer.as_deref(),
                        };
                        let verdict = judge_verify(&reply, &payment.verified.payer);
                        match &verdict {
                            VerifyVerdict::Accepted => fmetrics.verified.inc(),
                            VerifyVerdict::Refused { reason } => {
                                tracing::info!(facilitator = facilitator.name(), %reason, detail = v.invalid_message.as_deref().unwrap_or_default(), "payment refused by the facilitator");
                                fmetrics.failed(reason);
                            }
                            VerifyVerdict::Contradicted { detail } => {
                                tracing::error!(facilitator = facilitator.name(), detail, payer = %payment.verified.payer, answered_payer = v.payer.as_deref().unwrap_or_default(), "the facilitator verified another payment than the one sent; refused");
                                fmetrics.failed(detail);
                            }
                        }
                        verdict.event()
                    }
                }
            }
        };
        (event, extra)
    }
}

/// The reply to a paid request's admission: `None` lets it through to the upstream.
pub(super) fn admission_reply(
    answer: Answer,
    payment: &PaidRequest,
    route: &PricedRoute,
    url: &str,
    method: &str,
) -> Option<Reply> {
    match answer {
        Answer::Forward => None,
        Answer::Duplicate { settled: true } => Some(Reply::challenge(
            402,
            route,
            url,
            method,
            "payment_already_used",
            Some("this payment authorization was already used"),
        )),
        Answer::Challenge { reason } => Some(Reply::challenge(
            challenge_status(&reason),
            route,
            url,
            method,
            &reason,
            Some(&format!("the facilitator refused the payment: {reason}")),
        )),
        answer => Some(payment_reply(&answer, payment).unwrap_or_else(|| {
            Reply::error(
                500,
                "internal_error",
                "the gateway failed to handle the request",
            )
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Requirements whose serialisation fails.
    struct Unwritable;

    impl serde::Serialize for Unwritable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("cannot be written"))
        }
    }

    fn resource() -> crate::x402::ResourceInfo {
        crate::x402::ResourceInfo {
            url: "http://gw/paid".into(),
            description: "paid data".into(),
            mime_type: String::new(),
        }
    }

    #[test]
    fn requirements_that_cannot_be_written_are_an_error_not_null() {
        let built =
            facilitator_request(2, json!({"x402Version": 2}), &Unwritable, true, resource());
        assert!(built.is_err(), "{built:?}");
    }

    #[test]
    fn the_facilitator_request_carries_the_requirements_as_written() {
        let requirements = json!({"scheme": "exact", "network": "eip155:84532"});
        let built = facilitator_request(
            2,
            json!({"x402Version": 2}),
            &requirements,
            true,
            resource(),
        )
        .expect("writable requirements");
        assert_eq!(built.payment_requirements, requirements);
        assert_eq!(built.network(), "eip155:84532");
        assert_eq!(built.x402_version, 2);
        assert!(built.sync_settle);
        assert_eq!(built.resource, Some(resource()));
    }
}
