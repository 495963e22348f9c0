//! The claim job of `batch-settlement` channels: the charges kept in the channel store are the
//! gateway's claim on buyers' deposits until they are claimed on chain. On an interval (and early
//! once the unclaimed value passes a threshold) the latest voucher of every channel with unclaimed
//! charges is claimed through the facilitator, and what was claimed is swept to `pay_to`.
//!
//! One replica at a time runs it (a lease in the channel store). A claim the escrow refuses (a
//! buyer withdrew what was not yet claimed, say) is split until the rows that fail are alone, so
//! one bad channel never holds back the others' money.

use crate::facilitator::{Facilitator, FacilitatorRequest};
use crate::metrics::Metrics;
use crate::payment::batch::{
    claim_batch_digest, claim_payload, claim_rows, claimed, settle_payload, ChannelRecord,
    ClaimRow, ReceiverAuthorizerKey, BATCH_SETTLEMENT,
};
use crate::store::ChannelStore;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The lease name replicas compete for.
pub const CLAIM_LEASE: &str = "batch-settlement-claims";

/// Most vouchers one claim transaction carries (the official channel manager's default).
pub const CLAIMS_PER_BATCH: usize = 100;

/// Channels that share one claim transaction: the escrow takes one receiver authorizer's
/// signature per claim, and sweeps per receiver and token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ClaimGroup {
    network: String,
    receiver: String,
    token: String,
}

/// What one round of the job did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClaimRound {
    /// Vouchers claimed on chain.
    pub claimed: usize,
    /// Vouchers the escrow refused even alone (logged with the reason).
    pub refused: usize,
    /// Claim transactions sent.
    pub transactions: Vec<String>,
    /// Sweeps to `pay_to` that moved money.
    pub swept: Vec<String>,
}

/// The unclaimed value across channels, and how many channels there are.
pub async fn exposure(store: &dyn ChannelStore) -> Option<(u128, usize)> {
    let records = load_records(store).await?;
    let unclaimed = records.iter().map(ChannelRecord::unclaimed).sum();
    Some((unclaimed, records.len()))
}

async fn load_records(store: &dyn ChannelStore) -> Option<Vec<ChannelRecord>> {
    let listed = match store.list().await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::error!(error = %e, "the channel store cannot be listed; nothing is claimed this round");
            return None;
        }
    };
    Some(
        listed
            .into_iter()
            .filter_map(|(id, stored)| match ChannelRecord::from_json(&stored.record) {
                Ok(record) => Some(record),
                Err(e) => {
                    tracing::error!(channel = %id, error = %e, "a stored channel record cannot be read; it is left for an operator");
                    None
                }
            })
            .collect(),
    )
}

/// The `/settle` body of a seller-side operation (claim or sweep): requirements that name the
/// channel's network, token and receiver, and no price.
fn seller_request(group: &ClaimGroup, payload: Value) -> FacilitatorRequest {
    let requirements = json!({
        "scheme": BATCH_SETTLEMENT,
        "network": group.network,
        "asset": group.token,
        "amount": "0",
        "payTo": group.receiver,
        "maxTimeoutSeconds": 0,
        "extra": {},
    });
    FacilitatorRequest {
        x402_version: 2,
        payment_payload: json!({"x402Version": 2, "accepted": requirements, "payload": payload}),
        payment_requirements: requirements,
        sync_settle: true,
        resource: None,
    }
}

/// The `/settle` request that sweeps what was claimed for `receiver` and `token` on `network`
/// to the receiver (after a refund that claimed a channel's charges, say).
pub fn sweep_request(network: &str, receiver: &str, token: &str) -> FacilitatorRequest {
    let group = ClaimGroup {
        network: network.to_string(),
        receiver: receiver.to_string(),
        token: token.to_string(),
    };
    seller_request(&group, settle_payload(receiver, token))
}

/// Claims every channel with unclaimed charges, then sweeps each receiver's claimed total.
/// `facilitator_for` picks the facilitator of a network.
/// `owed` holds the (network, receiver, token) whose last sweep failed: they are swept again.
/// `authorizer` is the gateway's own receiver-authorizer key, which signs each claim; without it
/// the facilitator (the channels' receiver authorizer) signs.
pub async fn claim_once(
    store: &dyn ChannelStore,
    facilitator_for: &(dyn Fn(&str) -> Option<Arc<dyn Facilitator>> + Sync),
    authorizer: Option<&ReceiverAuthorizerKey>,
    owed: &mut BTreeSet<(String, String, String)>,
) -> ClaimRound {
    let mut round = ClaimRound::default();
    let Some(records) = load_records(store).await else {
        return round;
    };
    let mut groups: BTreeMap<ClaimGroup, Vec<ChannelRecord>> = BTreeMap::new();
    for record in records {
        let group = ClaimGroup {
            network: record.network.clone(),
            receiver: record.channel_config.receiver.clone(),
            token: record.channel_config.token.clone(),
        };
        groups.entry(group).or_default().push(record);
    }
    for (group, records) in groups {
        let Some(facilitator) = facilitator_for(&group.network) else {
            tracing::error!(network = %group.network, "no facilitator serves this network; its channels' charges stay unclaimed");
            continue;
        };
        let mut any_claimed = false;
        let rows = claim_rows(&records, usize::MAX);
        for batch in rows.chunks(CLAIMS_PER_BATCH) {
            any_claimed |= claim_split(
                store,
                facilitator.as_ref(),
                authorizer,
                &group,
                batch.to_vec(),
                &mut round,
            )
            .await;
        }
        let key = (
            group.network.clone(),
            group.receiver.clone(),
            group.token.clone(),
        );
        if any_claimed || owed.contains(&key) {
            if sweep(facilitator.as_ref(), &group, &mut round).await {
                owed.remove(&key);
            } else {
                owed.insert(key);
            }
        }
    }
    round
}

/// Claims `rows`; when the escrow refuses the batch, claims each half on its own, down to single
/// rows. Returns whether any row landed.
async fn claim_split(
    store: &dyn ChannelStore,
    facilitator: &dyn Facilitator,
    authorizer: Option<&ReceiverAuthorizerKey>,
    group: &ClaimGroup,
    rows: Vec<ClaimRow>,
    round: &mut ClaimRound,
) -> bool {
    let mut pending = vec![rows];
    let mut landed = false;
    while let Some(rows) = pending.pop() {
        let signature = match authorizer.map(|key| sign_claim(key, group, &rows)) {
            None => None,
            Some(Ok(signature)) => Some(signature),
            Some(Err(problem)) => {
                tracing::error!(network = %group.network, %problem, "a claim could not be signed; it is tried again next round");
                round.refused += rows.len();
                continue;
            }
        };
        let request = seller_request(group, claim_payload(&rows, signature.as_deref()));
        match facilitator.settle(&request).await {
            Ok(answer) if answer.response.success => {
                let transaction = answer.response.transaction.clone();
                tracing::info!(network = %group.network, vouchers = rows.len(), %transaction, "vouchers claimed on chain");
                Metrics::global()
                    .batch_claims
                    .with_label_values(&["claimed"])
                    .inc_by(rows.len() as u64);
                round.claimed += rows.len();
                round.transactions.push(transaction);
                landed = true;
                for row in &rows {
                    record_claim(store, row).await;
                }
            }
            outcome => {
                let reason = match &outcome {
                    Ok(answer) => answer
                        .response
                        .error_reason
                        .clone()
                        .unwrap_or_else(|| "claim_refused".into()),
                    Err(e) => e.failure().code().to_string(),
                };
                if rows.len() > 1 && outcome.is_ok() {
                    // One row may be what the escrow refuses: the rest must not wait for it.
                    let mut first = rows;
                    let second = first.split_off(first.len() / 2);
                    pending.push(second);
                    pending.push(first);
                    continue;
                }
                for row in &rows {
                    tracing::error!(channel = %row.channel, %reason, charged = %row.total_claimed, "a voucher could not be claimed; it is tried again next round");
                }
                Metrics::global()
                    .batch_claims
                    .with_label_values(&["failed"])
                    .inc_by(rows.len() as u64);
                round.refused += rows.len();
            }
        }
    }
    landed
}

/// The gateway's own receiver-authorizer signature of a claim of `rows` on `group`'s chain.
fn sign_claim(
    key: &ReceiverAuthorizerKey,
    group: &ClaimGroup,
    rows: &[ClaimRow],
) -> Result<String, String> {
    let chain_id = crate::x402::chain_id_of(&group.network)
        .ok_or_else(|| format!("`{}` is not an EVM network", group.network))?;
    let digest = claim_batch_digest(rows, chain_id).map_err(|e| e.message)?;
    key.sign(&digest).map_err(|e| e.message)
}

/// Writes a landed claim into the channel's record (a compare-and-swap: the channel may have
/// taken vouchers meanwhile, which stay unclaimed).
async fn record_claim(store: &dyn ChannelStore, row: &ClaimRow) {
    for _ in 0..8 {
        let stored = match store.load(&row.channel).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(channel = %row.channel, error = %e, "a claim landed but its record could not be updated; the next round finds it claimed on chain");
                return;
            }
        };
        let Ok(record) = ChannelRecord::from_json(&stored.record) else {
            return;
        };
        let next = claimed(record, row).to_json();
        match store
            .swap(&row.channel, Some(stored.version), Some(&next))
            .await
        {
            Ok(true) => return,
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(channel = %row.channel, error = %e, "a claim landed but its record could not be updated");
                return;
            }
        }
    }
}

/// Moves what was claimed for `group`'s receiver and token to the receiver: whether that is done
/// (moved, or nothing was left to move).
async fn sweep(facilitator: &dyn Facilitator, group: &ClaimGroup, round: &mut ClaimRound) -> bool {
    let request = seller_request(group, settle_payload(&group.receiver, &group.token));
    match facilitator.settle(&request).await {
        Ok(answer) if answer.response.success => {
            let amount = answer
                .response
                .amount
                .as_ref()
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_string))
                .unwrap_or_default();
            tracing::info!(network = %group.network, receiver = %group.receiver, %amount, transaction = %answer.response.transaction, "claimed charges swept to pay_to");
            round.swept.push(answer.response.transaction);
            true
        }
        Ok(answer) => {
            let reason = answer.response.error_reason.unwrap_or_default();
            if reason.ends_with("nothing_to_settle") {
                return true;
            }
            tracing::warn!(network = %group.network, %reason, "the sweep of claimed charges was refused; tried again next round");
            false
        }
        Err(e) => {
            tracing::warn!(network = %group.network, error = %e, "the sweep of claimed charges failed; tried again next round");
            false
        }
    }
}

/// How often the job looks at the store: often enough to act on the threshold, never more often
/// than every second.
pub fn check_every(interval: Duration) -> Duration {
    interval
        .min(Duration::from_secs(5))
        .max(Duration::from_secs(1))
}

/// One channel as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChannelRow {
    pub channel: String,
    pub network: String,
    pub payer: String,
    pub token: String,
    pub receiver: String,
    /// Charged by the gateway so far (atomic units).
    pub charged: String,
    /// Claimed on chain, as last seen.
    pub claimed: String,
    /// Charged and not yet claimed: lost if the channel store is lost.
    pub unclaimed: String,
    /// Deposited in the escrow, as last seen.
    pub balance: String,
    /// Unix seconds of a buyer's pending withdrawal request, 0 if none.
    pub withdraw_requested_at: u64,
    /// Unix milliseconds of the last paid request.
    pub last_request_ms: u64,
    /// Whether a request holds the channel now.
    pub busy: bool,
}

/// The operator's view of `records`, most exposed first.
pub fn channel_rows(records: &[ChannelRecord], now_ms: u64) -> Vec<ChannelRow> {
    let mut rows: Vec<&ChannelRecord> = records.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.unclaimed()));
    rows.into_iter()
        .map(|r| ChannelRow {
            channel: r.channel_id.clone(),
            network: r.network.clone(),
            payer: r.channel_config.payer.clone(),
            token: r.channel_config.token.clone(),
            receiver: r.channel_config.receiver.clone(),
            charged: r.charged_cumulative_amount.to_string(),
            claimed: r.onchain.total_claimed.to_string(),
            unclaimed: r.unclaimed().to_string(),
            balance: r.onchain.balance.to_string(),
            withdraw_requested_at: r.onchain.withdraw_requested_at,
            last_request_ms: r.last_request_ms,
            busy: r.pending.as_ref().is_some_and(|p| p.expires_at_ms > now_ms),
        })
        .collect()
}

/// Every channel of `store`, for an operator.
pub async fn list_channels(store: &dyn ChannelStore, now_ms: u64) -> Option<Vec<ChannelRow>> {
    Some(channel_rows(&load_records(store).await?, now_ms))
}

/// `rows` as CSV (a header line, then one line per channel): the fields are addresses, hex ids
/// and numbers, none of which needs quoting.
pub fn channels_csv(rows: &[ChannelRow]) -> String {
    let mut out = String::from(
        "channel,network,payer,token,receiver,charged,claimed,unclaimed,balance,withdraw_requested_at,last_request_ms,busy\n",
    );
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.channel,
            r.network,
            r.payer,
            r.token,
            r.receiver,
            r.charged,
            r.claimed,
            r.unclaimed,
            r.balance,
            r.withdraw_requested_at,
            r.last_request_ms,
            r.busy
        ));
    }
    out
}
