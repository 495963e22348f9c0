//! `batch-settlement` payments at the gateway: a channel's voucher is checked here, the channel is
//! held for the request in the shared channel store, and the charge is kept there once the
//! upstream has succeeded. A steady-state voucher needs no facilitator call at all; deposits are
//! verified and settled through the facilitator like `exact` payments.
//!
//! What each step decides is [`crate::payment::batch`]'s: this module loads records, hands them to
//! those functions and compare-and-swaps what they return.

use super::admission::{admission_reply, facilitator_request, PaymentOffer};
use super::reply::Reply;
use super::settlement::PaidRequest;
use super::{Gateway, GatewayState, RequestCtx};
use crate::payment::batch::{
    after_refund, check_channel, codes, commit, corrective_extra, cumulative_check, local_verdict,
    receipt_extra, refund_amount, refund_settle_payload, release, reserve, voucher_charge,
    BatchPayload, BatchRefusal, BatchTerms, ChannelPayment, ChannelRecord, CommitRefusal,
    LocalVerdict, MirrorSource, OnchainMirror, PayloadKind, ReceiverAuthorizerKey, Release,
    ReserveRefusal, BATCH_SETTLEMENT, RECEIVER_AUTHORIZER_KEY, WITHDRAW_DELAY_KEY,
};
use crate::payment::{
    check_extension_echo, find_option, Answer, Event, Failure, Finality, Lifecycle, Outcome,
    Receipt, ReplayKey, SettleOutcome, VerifiedPayment,
};
use crate::pricing::{PaymentOption, PricedRoute};
use crate::store::StoreError;
use crate::time::unix_now_ms;
use crate::x402::{encode_header_json, PaymentPayload, SettleResponse};

/// A channel payment on its way through the request: what it pays with and the reservation it
/// holds.
pub(super) struct ChannelHold {
    pub payment: ChannelPayment,
    pub terms: BatchTerms,
    /// The asset's decimals, to read a dollar `Settlement-Overrides`.
    pub decimals: u8,
    /// The id of this request's reservation on the channel.
    pub pending_id: String,
}

/// A cooperative refund request and the route option it names.
struct Refund<'a, 'r> {
    route: &'r PricedRoute,
    url: &'a str,
    method: &'a str,
    option_index: usize,
    option: &'r PaymentOption,
    terms: BatchTerms,
    channel: ChannelPayment,
    raw: serde_json::Value,
}

/// Why the channel store could not be used: the payment is refused, never let through.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChannelStoreFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a stored channel record cannot be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the channel kept changing under this request")]
    Contended,
}

/// What a decision about a channel's record writes.
enum Change<T> {
    Write(Box<ChannelRecord>, T),
    Delete(T),
    Keep(T),
}

/// How many times a compare-and-swap is retried when another writer got there first: one
/// channel takes one request at a time, so more than a couple of retries means a fight.
const SWAP_ATTEMPTS: usize = 8;

/// The channel terms a route's option sets; `None` when the facilitator named no receiver
/// authorizer at start-up (the option cannot be paid).
pub(super) fn batch_terms(option: &PaymentOption) -> Option<BatchTerms> {
    let r = &option.requirements;
    let extra = &r.extra;
    Some(BatchTerms {
        chain_id: option.chain_id,
        receiver: r.pay_to.parse().ok()?,
        receiver_authorizer: extra.get(RECEIVER_AUTHORIZER_KEY)?.as_str()?.parse().ok()?,
        token: r.asset.parse().ok()?,
        withdraw_delay: extra.get(WITHDRAW_DELAY_KEY)?.as_u64()?,
        price: option.amount,
        max_timeout_secs: r.max_timeout_seconds,
    })
}

/// The network of a `batch-settlement` option of `route` that no facilitator has named a
/// receiver authorizer for, if any.
pub(super) fn unpayable_batch(route: &PricedRoute) -> Option<&str> {
    route
        .options
        .iter()
        .find(|o| o.requirements.scheme == BATCH_SETTLEMENT && batch_terms(o).is_none())
        .map(|o| o.requirements.network.as_str())
}

/// The paid request of a channel payment, before its channel is held: what the lifecycle, the
/// facilitator calls and the metrics of a voucher, deposit or refund read.
fn channel_paid_request(
    ctx: &RequestCtx,
    route: &PricedRoute,
    (option_index, option): (usize, &PaymentOption),
    request: crate::facilitator::FacilitatorRequest,
    channel: &ChannelPayment,
    pending: &str,
    amount: u128,
) -> PaidRequest {
    let network = option.requirements.network.clone();
    PaidRequest {
        version: 2,
        verified: VerifiedPayment {
            option_index,
            payer: channel.payer.to_checksum(None),
            amount,
            valid_before: u64::MAX,
            // One per request: a channel's requests are told apart by their reservation.
            replay_key: ReplayKey::new(
                &network,
                &option.requirements.asset,
                &channel.channel,
                pending,
            ),
            signature_checked_locally: channel.kind == PayloadKind::Voucher,
        },
        request,
        network,
        life: Lifecycle::new(route.settle),
        facilitator: None,
        receipt: None,
        transaction: String::new(),
        // Channel payments are not journaled: the channel store keeps what each channel was
        // charged (`channels` lists it), and deposits, claims and refunds are logged with their
        // transactions.
        entry: None,
        route_index: ctx.route_index,
        item_index: ctx.mcp_item,
        answer_cut: false,
        metered: None,
        access: None,
        batch: None,
    }
}

/// The resource a route's challenge and facilitator requests name.
fn resource_of(route: &PricedRoute, url: &str) -> crate::x402::ResourceInfo {
    crate::x402::ResourceInfo {
        url: url.to_string(),
        description: route.description.clone(),
        mime_type: route.mime_type.clone(),
    }
}

/// A channel payment (or refund) refused: the challenge again, with the scheme's code.
fn refused_with(
    ctx: &mut RequestCtx,
    route: &PricedRoute,
    url: &str,
    method: &str,
    refusal: &BatchRefusal,
) -> Reply {
    ctx.session.count_as(Outcome::Refused);
    tracing::info!(code = refusal.code, reason = %refusal.message, "channel payment refused");
    Reply::challenge(
        402,
        route,
        url,
        method,
        refusal.code,
        Some(&refusal.message),
    )
}

/// A fresh reservation id: 128 random bits.
fn pending_id() -> String {
    let bytes: [u8; 16] = rand::random();
    alloy_primitives::hex::encode(bytes)
}

impl Gateway {
    /// Reads `channel`'s record, lets `decide` compute the change, and writes it if nobody wrote
    /// in between (else reads again).
    async fn update_channel<T>(
        &self,
        channel: &str,
        mut decide: impl FnMut(Option<&ChannelRecord>) -> Change<T>,
    ) -> Result<T, ChannelStoreFailure> {
        for _ in 0..SWAP_ATTEMPTS {
            let stored = self.channels.load(channel).await?;
            let record = stored
                .as_ref()
                .map(|s| ChannelRecord::from_json(&s.record))
                .transpose()?;
            let version = stored.as_ref().map(|s| s.version);
            let (next, out) = match decide(record.as_ref()) {
                Change::Keep(out) => return Ok(out),
                Change::Write(next, out) => (Some(next.to_json()), out),
                Change::Delete(out) => (None, out),
            };
            if self
                .channels
                .swap(channel, version, next.as_deref())
                .await?
            {
                return Ok(out);
            }
        }
        Err(ChannelStoreFailure::Contended)
    }

    async fn load_channel(
        &self,
        channel: &str,
    ) -> Result<Option<ChannelRecord>, ChannelStoreFailure> {
        Ok(self
            .channels
            .load(channel)
            .await?
            .map(|s| ChannelRecord::from_json(&s.record))
            .transpose()?)
    }

    /// Decides a `batch-settlement` payment: the channel checks, the voucher judged here when the
    /// channel's mirror is fresh (else by the facilitator), the channel held for this request.
    /// `None` lets the request through with the payment in `ctx`.
    pub(super) async fn admit_batch(
        &self,
        ctx: &mut RequestCtx,
        route: &PricedRoute,
        offer: PaymentOffer<'_>,
    ) -> Option<Reply> {
        let PaymentOffer {
            url,
            method,
            payment,
            raw,
            ..
        } = offer;
        let refused = |ctx: &mut RequestCtx, refusal: &BatchRefusal| {
            Some(refused_with(ctx, route, url, method, refusal))
        };
        let PaymentPayload::Batch(batch) = &payment else {
            return None;
        };
        let found = check_extension_echo(&route.declared_extensions(method, url), &raw)
            .and_then(|()| find_option(route, &payment));
        let (option_index, option) = match found {
            Ok(found) => found,
            Err(rejection) => {
                ctx.session.count_as(Outcome::Refused);
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
        let Some(terms) = batch_terms(option) else {
            ctx.session.count_as(Outcome::Error);
            return Some(Reply::unavailable(
                Failure::FacilitatorUnavailable.code(),
                Failure::FacilitatorUnavailable.message(),
            ));
        };
        let channel = match BatchPayload::from_json(&batch.payload)
            .and_then(|payload| check_channel(&payload, &terms))
        {
            Ok(channel) => channel,
            Err(refusal) => return refused(ctx, &refusal),
        };
        if channel.kind == PayloadKind::Refund && ctx.mcp_item.is_some() {
            // The official client asks for refunds over HTTP, at the route's URL.
            return refused(
                ctx,
                &BatchRefusal {
                    code: codes::PAYLOAD,
                    message: "refunds are asked for over HTTP at a channel route, not through an MCP tool".into(),
                },
            );
        }
        if channel.kind == PayloadKind::Refund {
            let refund = Refund {
                route,
                url,
                method,
                option_index,
                option,
                terms,
                channel,
                raw,
            };
            return Some(Box::pin(self.refund_channel(ctx, refund)).await);
        }
        let now_ms = unix_now_ms_u64();
        let record = match self.load_channel(&channel.channel).await {
            Ok(record) => record,
            Err(e) => return Some(self.channel_store_down(ctx, &e)),
        };
        if let Err(mismatch) = cumulative_check(record.as_ref(), &channel, terms.price) {
            return Some(self.corrective(
                ctx,
                route,
                url,
                method,
                record.as_ref(),
                &mismatch.refusal(),
            ));
        }

        let state = ctx.state.clone();
        let request = facilitator_request(
            2,
            raw,
            &option.requirements,
            route.sync_settle,
            resource_of(route, url),
        );
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the facilitator request");
                ctx.session.count_as(Outcome::Error);
                return Some(Reply::error(
                    500,
                    "internal_error",
                    "the gateway failed to handle the payment; nothing was charged",
                ));
            }
        };
        let hold = ChannelHold {
            pending_id: pending_id(),
            decimals: option.decimals,
            terms,
            payment: channel,
        };
        let paid = ctx.session.paid.insert(Box::new(channel_paid_request(
            ctx,
            route,
            (option_index, option),
            request,
            &hold.payment,
            &hold.pending_id,
            hold.terms.price,
        )));

        let (event, mirror) =
            match local_verdict(record.as_ref(), &hold.payment, hold.terms.chain_id, now_ms) {
                LocalVerdict::Valid => (Event::Accepted, MirrorSource::Kept),
                LocalVerdict::Invalid(refusal) => {
                    ctx.session.paid = None;
                    return refused(ctx, &refusal);
                }
                LocalVerdict::AskFacilitator => {
                    let (event, extra) = self.verify(&state, paid).await;
                    let mirror = extra
                        .as_ref()
                        .and_then(OnchainMirror::from_extra)
                        .unwrap_or_default();
                    (event, MirrorSource::Fresh(mirror))
                }
            };
        if matches!(event, Event::Accepted) {
            let held = self
                .update_channel(&hold.payment.channel, |current| {
                    match reserve(
                        current,
                        &hold.payment,
                        &hold.terms,
                        &paid.network,
                        mirror,
                        &hold.pending_id,
                        now_ms,
                    ) {
                        Ok(next) => Change::Write(Box::new(next), Ok(())),
                        Err(refusal) => Change::Keep(Err((refusal, current.cloned()))),
                    }
                })
                .await;
            match held {
                Ok(Ok(())) => {}
                Ok(Err((ReserveRefusal::Busy, _))) => {
                    ctx.session.paid = None;
                    return refused(ctx, &ReserveRefusal::Busy.refusal());
                }
                Ok(Err((refusal @ ReserveRefusal::Mismatch(_), current))) => {
                    ctx.session.paid = None;
                    return Some(self.corrective(
                        ctx,
                        route,
                        url,
                        method,
                        current.as_ref(),
                        &refusal.refusal(),
                    ));
                }
                Err(e) => {
                    ctx.session.paid = None;
                    return Some(self.channel_store_down(ctx, &e));
                }
            }
        }
        let paid = ctx.session.paid.as_mut()?;
        paid.batch = Some(Box::new(hold));
        let answer = self.advance(&state, paid, event).await;
        admission_reply(answer, paid, route, url, method)
    }

    /// A cooperative refund: the buyer's zero-charge voucher asks for the channel's uncharged
    /// deposit back. Verified by the facilitator, the channel held like any request, then the
    /// refund (with a claim of what was charged) settled through the facilitator, which signs it as
    /// the receiver authorizer. The upstream is never called.
    async fn refund_channel(&self, ctx: &mut RequestCtx, refund: Refund<'_, '_>) -> Reply {
        let Refund {
            route,
            url,
            method,
            option_index,
            option,
            terms,
            channel,
            raw,
        } = refund;
        let refused = |ctx: &mut RequestCtx, refusal: &BatchRefusal| {
            refused_with(ctx, route, url, method, refusal)
        };
        let record = match self.load_channel(&channel.channel).await {
            Ok(Some(record)) => record,
            Ok(None) => {
                return refused(
                    ctx,
                    &BatchRefusal {
                        code: codes::MISSING_CHANNEL,
                        message: "this gateway keeps no state for this channel: there is nothing it can refund; the deposit can be withdrawn from the escrow".into(),
                    },
                )
            }
            Err(e) => return self.channel_store_down(ctx, &e),
        };
        if let Err(mismatch) = cumulative_check(Some(&record), &channel, terms.price) {
            return self.corrective(ctx, route, url, method, Some(&record), &mismatch.refusal());
        }
        let state = ctx.state.clone();
        let resource = resource_of(route, url);
        let request =
            match facilitator_request(2, raw.clone(), &option.requirements, true, resource.clone())
            {
                Ok(request) => request,
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the facilitator request");
                    ctx.session.count_as(Outcome::Error);
                    return Reply::error(
                        500,
                        "internal_error",
                        "the gateway failed to handle the refund",
                    );
                }
            };
        let pending = pending_id();
        let mut paid = channel_paid_request(
            ctx,
            route,
            (option_index, option),
            request,
            &channel,
            &pending,
            0,
        );
        let (event, extra) = self.verify(&state, &mut paid).await;
        if !matches!(event, Event::Accepted) {
            let answer = self.feed(&mut paid, event).await;
            ctx.session.count_as(Outcome::Refused);
            return admission_reply(answer, &paid, route, url, method).unwrap_or_else(|| {
                Reply::error(
                    500,
                    "internal_error",
                    "the gateway failed to handle the refund",
                )
            });
        }
        let mirror = extra
            .as_ref()
            .and_then(OnchainMirror::from_extra)
            .unwrap_or(record.onchain);
        let now_ms = unix_now_ms_u64();
        let held = self
            .update_channel(&channel.channel, |current| {
                match reserve(
                    current,
                    &channel,
                    &terms,
                    &paid.network,
                    MirrorSource::Fresh(mirror),
                    &pending,
                    now_ms,
                ) {
                    Ok(next) => Change::Write(Box::new(next.clone()), Ok(next)),
                    Err(refusal) => Change::Keep(Err((refusal, current.cloned()))),
                }
            })
            .await;
        let held = match held {
            Ok(Ok(held)) => held,
            Ok(Err((ReserveRefusal::Busy, _))) => {
                return refused(ctx, &ReserveRefusal::Busy.refusal())
            }
            Ok(Err((refusal @ ReserveRefusal::Mismatch(_), current))) => {
                return self.corrective(
                    ctx,
                    route,
                    url,
                    method,
                    current.as_ref(),
                    &refusal.refusal(),
                )
            }
            Err(e) => return self.channel_store_down(ctx, &e),
        };
        paid.batch = Some(Box::new(ChannelHold {
            payment: channel,
            decimals: option.decimals,
            terms,
            pending_id: pending,
        }));
        let Some(hold) = paid.batch.as_ref() else {
            return Reply::error(
                500,
                "internal_error",
                "the gateway failed to handle the refund",
            );
        };
        let amount = match refund_amount(&held, hold.payment.refund_amount.as_deref()) {
            Ok(amount) => amount,
            Err(refusal) => {
                self.release_channel(&paid).await;
                return refused(ctx, &refusal);
            }
        };
        let buyer_payload = raw.get("payload").cloned().unwrap_or_default();
        let own_key = state
            .config
            .batch
            .receiver_authorizer_key
            .as_ref()
            .and_then(|k| ReceiverAuthorizerKey::from_hex(k.expose()).ok());
        let authorizer = own_key.as_ref().map(|k| (k, hold.terms.chain_id));
        let completed =
            match refund_settle_payload(&buyer_payload, &held, &hold.payment, amount, authorizer) {
                Ok(completed) => completed,
                Err(refusal) => {
                    self.release_channel(&paid).await;
                    tracing::error!(reason = %refusal.message, "a refund could not be signed");
                    ctx.session.count_as(Outcome::Error);
                    return Reply::error(
                        500,
                        "internal_error",
                        "the gateway failed to handle the refund",
                    );
                }
            };
        let mut settle_body = raw;
        if let Some(map) = settle_body.as_object_mut() {
            map.insert("payload".into(), completed);
        }
        paid.request.payment_payload = settle_body;
        let Some(facilitator) = paid.facilitator.clone() else {
            self.release_channel(&paid).await;
            ctx.session.count_as(Outcome::Error);
            return Reply::unavailable(
                Failure::FacilitatorUnavailable.code(),
                Failure::FacilitatorUnavailable.message(),
            );
        };
        let settled = facilitator.settle(&paid.request).await.map(|s| s.response);
        let answer = match settled {
            Ok(answer) if answer.success => answer,
            Ok(answer) => {
                self.release_channel(&paid).await;
                let reason = answer
                    .error_reason
                    .unwrap_or_else(|| "refund_refused".into());
                tracing::warn!(channel = %hold.payment.channel, %reason, "the facilitator refused a refund");
                return refused(
                    ctx,
                    &BatchRefusal {
                        code: codes::REFUND_REFUSED,
                        message: format!("the refund was refused: {reason}"),
                    },
                );
            }
            Err(e) => {
                // Nothing is known of the chain: the channel is freed with its mirror marked stale,
                // so the next request asks the facilitator again.
                tracing::error!(channel = %hold.payment.channel, error = %e, "refund settlement failed");
                self.finish_refund(&paid, None).await;
                ctx.session.count_as(Outcome::Error);
                let failure = e.failure();
                return Reply::error(502, failure.code(), failure.message());
            }
        };
        let mirror = answer.extra.as_ref().and_then(OnchainMirror::from_extra);
        self.finish_refund(&paid, mirror).await;
        if held.charged_cumulative_amount > held.onchain.total_claimed {
            // The refund claimed the channel's charges on chain: they are swept to pay_to now,
            // as the claim job would have (the channel's record may be gone).
            let sweep = crate::ops::claims::sweep_request(
                &paid.network,
                &hold.payment.config.receiver,
                &hold.payment.config.token,
            );
            let facilitator = facilitator.clone();
            tokio::spawn(async move {
                match facilitator.settle(&sweep).await {
                    Ok(done) if done.response.success => {
                        tracing::info!(transaction = %done.response.transaction, "charges claimed by a refund swept to pay_to");
                    }
                    Ok(done) => tracing::warn!(
                        reason = done.response.error_reason.unwrap_or_default(),
                        "the sweep after a refund was refused; the next claim round sweeps it"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "the sweep after a refund failed; the next claim round sweeps it")
                    }
                }
            });
        }
        tracing::info!(channel = %hold.payment.channel, amount = %amount, transaction = %answer.transaction, "channel refunded");
        ctx.session.count_as(Outcome::Refunded);
        let mut receipt = answer;
        let mut extra = receipt
            .extra
            .take()
            .unwrap_or_else(|| serde_json::json!({}));
        if let Some(state) = extra
            .get_mut("channelState")
            .and_then(|v| v.as_object_mut())
        {
            state.insert(
                "chargedCumulativeAmount".into(),
                serde_json::json!(held.charged_cumulative_amount.to_string()),
            );
        } else if let Some(map) = extra.as_object_mut() {
            map.insert("channelState".into(), serde_json::json!({"chargedCumulativeAmount": held.charged_cumulative_amount.to_string()}));
        }
        receipt.extra = Some(extra);
        let receipt = Receipt {
            version: 2,
            encoded: encode_header_json(&receipt),
        };
        Reply::json(200, serde_json::json!({"message": "Refund acknowledged", "channelId": hold.payment.channel}))
            .with_settlement(&receipt)
    }

    /// Writes the channel's state after a refund settled (or its outcome could not be known).
    async fn finish_refund(&self, paid: &PaidRequest, mirror: Option<OnchainMirror>) {
        let Some(hold) = paid.batch.as_ref() else {
            return;
        };
        let now_ms = unix_now_ms_u64();
        let written = self
            .update_channel(&hold.payment.channel, |current| {
                match after_refund(current, &hold.pending_id, mirror, now_ms) {
                    Release::Untouched => Change::Keep(()),
                    Release::Write(next) => Change::Write(next, ()),
                    Release::Delete => Change::Delete(()),
                }
            })
            .await;
        if let Err(e) = written {
            tracing::error!(channel = %hold.payment.channel, error = %e, "a settled refund could not be written to the channel's record; its hold expires on its own");
        }
    }

    /// The corrective challenge: the buyer's cumulative disagrees with the channel's record, which
    /// the challenge carries (with the latest voucher proving it) so that the buyer resyncs.
    fn corrective(
        &self,
        ctx: &mut RequestCtx,
        route: &PricedRoute,
        url: &str,
        method: &str,
        record: Option<&ChannelRecord>,
        refusal: &BatchRefusal,
    ) -> Reply {
        ctx.session.count_as(Outcome::Refused);
        tracing::info!(code = refusal.code, reason = %refusal.message, "channel payment out of step; corrective challenge");
        let reply = Reply::challenge(
            402,
            route,
            url,
            method,
            refusal.code,
            Some(&refusal.message),
        );
        match record {
            Some(record) => reply.with_requirement_extra(
                BATCH_SETTLEMENT,
                &record.network,
                corrective_extra(record),
            ),
            None => reply,
        }
    }

    fn channel_store_down(&self, ctx: &mut RequestCtx, e: &ChannelStoreFailure) -> Reply {
        tracing::error!(error = %e, "the channel store cannot be used; channel payments are refused");
        ctx.session.count_as(Outcome::Error);
        Reply::unavailable(
            codes::STATE_UNAVAILABLE,
            "channel payments cannot be checked right now; nothing was charged, retry shortly",
        )
    }

    /// Frees the channel a failed request held: nothing it carried is charged or kept.
    pub(super) async fn release_channel(&self, payment: &PaidRequest) {
        let Some(hold) = payment.batch.as_ref() else {
            return;
        };
        let released = self
            .update_channel(&hold.payment.channel, |current| {
                match release(current, &hold.pending_id) {
                    Release::Untouched => Change::Keep(()),
                    Release::Write(next) => Change::Write(next, ()),
                    Release::Delete => Change::Delete(()),
                }
            })
            .await;
        if let Err(e) = released {
            // The reservation expires on its own; until then the channel answers busy.
            tracing::error!(channel = %hold.payment.channel, error = %e, "a failed request's hold on its channel could not be released; it expires on its own");
        }
    }

    /// Feeds a channel payment's final upstream status, its charge first read from the upstream's
    /// `Settlement-Overrides` (the price when there is none).
    pub(super) async fn advance_channel(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
        status: u16,
        overrides: Option<&str>,
    ) -> Answer {
        if let Some(hold) = payment.batch.as_ref() {
            let price = hold.terms.price;
            payment.verified.amount = match voucher_charge(price, hold.decimals, overrides) {
                Ok(charge) => charge,
                Err(problem) => {
                    tracing::warn!(%problem, "a channel payment's Settlement-Overrides is unreadable; the price is charged");
                    price
                }
            };
        }
        self.advance(state, payment, Event::UpstreamAnswered { status })
            .await
    }

    /// Settles a channel payment whose upstream succeeded: a voucher's charge is kept in the
    /// channel store (no facilitator call); a deposit is settled on chain first, then kept.
    pub(super) async fn settle_channel(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
    ) -> Answer {
        let Some(kind) = payment.batch.as_ref().map(|h| h.payment.kind) else {
            let outcome = SettleOutcome::NotSent(Failure::FacilitatorUnavailable);
            return self.feed(payment, Event::SettleAnswered(outcome)).await;
        };
        let mut answer_extra = None;
        let mut mirror = None;
        let mut finality = Finality::Batched;
        if kind == PayloadKind::Deposit {
            match self.settle_deposit(state, payment).await {
                Ok(settled) => {
                    mirror = settled.extra.as_ref().and_then(OnchainMirror::from_extra);
                    finality = Finality::Confirmed;
                    answer_extra = Some(settled);
                }
                Err(outcome) => return self.feed(payment, Event::SettleAnswered(outcome)).await,
            }
        }
        let Some(hold) = payment.batch.as_ref() else {
            return Answer::Nothing;
        };
        let charge = payment.verified.amount;
        let now_ms = unix_now_ms_u64();
        let committed = self
            .update_channel(&hold.payment.channel, |current| {
                match commit(
                    current,
                    &hold.payment,
                    &hold.pending_id,
                    charge,
                    mirror,
                    now_ms,
                ) {
                    Ok(committed) => Change::Write(Box::new(committed.next.clone()), Ok(committed)),
                    // Nothing is charged and the channel is freed.
                    Err(refusal @ CommitRefusal::ExceedsSigned(_)) => {
                        let message = refusal.refusal();
                        let CommitRefusal::ExceedsSigned(freed) = refusal else {
                            return Change::Keep(Err(message));
                        };
                        Change::Write(freed, Err(message))
                    }
                    Err(refusal) => Change::Keep(Err(refusal.refusal())),
                }
            })
            .await;
        let outcome = match committed {
            Ok(Ok(committed)) => {
                let mut receipt = answer_extra.unwrap_or_else(|| SettleResponse {
                    success: true,
                    error_reason: None,
                    error_message: None,
                    payer: Some(payment.verified.payer.to_ascii_lowercase()),
                    transaction: String::new(),
                    network: payment.network.clone(),
                    status: None,
                    amount: Some(serde_json::Value::from("")),
                    extra: None,
                });
                receipt.extra = Some(receipt_extra(&committed));
                payment.receipt = Some(Receipt {
                    version: payment.version,
                    encoded: encode_header_json(&receipt),
                });
                if let Some(revenue) = state
                    .metrics_for(payment.route_index, payment.item_index)
                    .and_then(|m| m.revenue.get(payment.verified.option_index))
                {
                    revenue.inc_by(u64::try_from(committed.charged).unwrap_or(u64::MAX));
                }
                SettleOutcome::Settled(finality)
            }
            Ok(Err(refusal)) => {
                tracing::warn!(code = refusal.code, reason = %refusal.message, "a channel charge was not kept");
                SettleOutcome::Refused {
                    reason: refusal.code.to_string(),
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the channel store could not keep a charge; nothing is charged");
                SettleOutcome::NotSent(Failure::JournalUnavailable)
            }
        };
        self.feed(payment, Event::SettleAnswered(outcome)).await
    }

    /// `/settle` of a deposit: the buyer's funds move into the escrow. The facilitator's answer
    /// on success; otherwise the outcome to feed.
    async fn settle_deposit(
        &self,
        state: &GatewayState,
        payment: &mut PaidRequest,
    ) -> Result<SettleResponse, SettleOutcome> {
        let Some(facilitator) = payment.facilitator.clone() else {
            return Err(SettleOutcome::NotSent(Failure::FacilitatorUnavailable));
        };
        let fmetrics = state.facilitator_metrics_named(facilitator.name());
        match facilitator
            .settle(&payment.request)
            .await
            .map(|s| s.response)
        {
            Ok(answer) if answer.success && !answer.transaction.is_empty() => {
                fmetrics.settled.inc();
                payment.transaction = answer.transaction.clone();
                Ok(answer)
            }
            Ok(answer) if !answer.success => {
                let reason = answer
                    .error_reason
                    .clone()
                    .unwrap_or_else(|| "settlement_failed".to_string());
                fmetrics.failed(&reason);
                tracing::warn!(payer = %payment.verified.payer, %reason, "deposit settlement refused");
                Err(SettleOutcome::Refused { reason })
            }
            Ok(_) => {
                fmetrics.failed(Failure::FacilitatorBadResponse.code());
                tracing::error!(
                    facilitator = facilitator.name(),
                    "a deposit settlement succeeded without a transaction"
                );
                Err(SettleOutcome::Unknown {
                    detail: "deposit_without_transaction".into(),
                })
            }
            Err(e) => {
                fmetrics.failed(e.failure().code());
                tracing::error!(facilitator = facilitator.name(), error = %e, "deposit settlement failed");
                Err(if e.never_sent() {
                    SettleOutcome::NotSent(e.failure())
                } else {
                    SettleOutcome::Unknown {
                        detail: e.failure().code().to_string(),
                    }
                })
            }
        }
    }
}

fn unix_now_ms_u64() -> u64 {
    u64::try_from(unix_now_ms()).unwrap_or_default()
}
