//! The settlement journal: an append-only file of JSON lines, one per payment event (verified,
//! settled, pending, failed, not charged). Each append is written and fsynced before the call
//! returns, so the response that depends on it is sent only once it is on disk.
//!
//! Appends from all requests go through one writer thread that syncs once per batch (group
//! commit): under load one fsync covers many payments. A torn last line (the process killed mid
//! write) is skipped when reading. Pending entries are reconciled in the background with the
//! facilitator that settled them; the journal never rewrites a line, it appends the final state.

use crate::facilitator::{settle_reply, Facilitator, SettlementLookup};
use crate::metrics::Metrics;
use crate::payment::{
    is_refund_candidate, judge_settle, ExpectedSettlement, Finality, ReplayGuard, ReplayKey,
    SettleAnswer, SettleOutcome, SettleVerdict,
};
use async_trait::async_trait;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

pub mod postgres;
pub use crate::payment::PaymentState;
pub use crate::ports::{Journal, JournalEntry, JournalError};
pub use postgres::PgJournal;

type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The journal file with its writer thread.
pub struct FileJournal {
    path: PathBuf,
    sender: Mutex<mpsc::Sender<(Vec<u8>, Ack)>>,
    pending: Mutex<HashMap<String, JournalEntry>>,
}

impl FileJournal {
    /// Opens (or creates) the journal at `path`; returns it with the entries already in it.
    pub fn open(path: &Path) -> Result<(Arc<Self>, Vec<JournalEntry>), JournalError> {
        let open_error = |e: std::io::Error| JournalError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_error)?;
        }
        let existed = path.exists();
        let entries = if existed {
            read_entries(path)?
        } else {
            Vec::new()
        };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(open_error)?;
        if !existed {
            // The new file's directory entry must survive a crash too.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        let (sender, receiver) = mpsc::channel::<(Vec<u8>, Ack)>();
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || write_loop(&mut file, receiver))
            .map_err(open_error)?;
        let mut pending = HashMap::new();
        for entry in latest_states(&entries) {
            if entry.state == PaymentState::Pending {
                pending.insert(entry.id.clone(), entry);
            }
        }
        Metrics::global().journal_pending.set(pending.len() as i64);
        Ok((
            Arc::new(Self {
                path: path.to_path_buf(),
                sender: Mutex::new(sender),
                pending: Mutex::new(pending),
            }),
            entries,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn track(&self, entry: &JournalEntry) {
        if let Ok(mut pending) = self.pending.lock() {
            if entry.state == PaymentState::Pending {
                pending.insert(entry.id.clone(), entry.clone());
            } else {
                pending.remove(&entry.id);
            }
            Metrics::global().journal_pending.set(pending.len() as i64);
        }
    }
}

/// Writes what is queued, one fsync per batch, then acknowledges each append of the batch.
fn write_loop(file: &mut File, receiver: mpsc::Receiver<(Vec<u8>, Ack)>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
        }
        let mut buffer = Vec::with_capacity(batch.iter().map(|(l, _)| l.len()).sum());
        for (line, _) in &batch {
            buffer.extend_from_slice(line);
        }
        let result = file
            .write_all(&buffer)
            .and_then(|_| file.sync_data())
            .map_err(|e| e.to_string());
        for (_, ack) in batch {
            let _ = ack.send(result.clone());
        }
    }
}

#[async_trait]
impl Journal for FileJournal {
    async fn append(&self, entry: JournalEntry) -> Result<(), JournalError> {
        let mut line =
            serde_json::to_vec(&entry).map_err(|e| JournalError::Write(e.to_string()))?;
        line.push(b'\n');
        let (ack, done) = tokio::sync::oneshot::channel();
        self.sender
            .lock()
            .map_err(|_| JournalError::Write("writer lock poisoned".into()))?
            .send((line, ack))
            .map_err(|_| JournalError::Write("the writer thread stopped".into()))?;
        let result = done
            .await
            .map_err(|_| JournalError::Write("the writer thread stopped".into()))?
            .map_err(JournalError::Write);
        match &result {
            Ok(()) => self.track(&entry),
            Err(e) => {
                Metrics::global().journal_errors.inc();
                tracing::error!(error = %e, id = %entry.id, state = entry.state.as_str(), "journal write failed");
            }
        }
        result
    }

    fn pending(&self) -> Vec<JournalEntry> {
        self.pending
            .lock()
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }
}

/// Every readable entry of the journal at `path`, in file order. Unreadable lines (a write cut
/// short by a crash) are skipped with a warning.
pub fn read_entries(path: &Path) -> Result<Vec<JournalEntry>, JournalError> {
    let file = File::open(path).map_err(|e| JournalError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut entries = Vec::new();
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.map_err(|e| JournalError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<JournalEntry>(&line) {
            Ok(entry) => entries.push(entry),
            Err(e) => tracing::warn!(
                journal = %path.display(),
                line = number + 1,
                error = %e,
                "skipping an unreadable journal line"
            ),
        }
    }
    Ok(entries)
}

/// The latest entry of each payment, in the order payments first appeared.
///
/// A journal file has one writer that appends in order, so its last line is the payment's state:
/// for every transition one gateway writes, that is what [`PaymentState::succession`] (the order
/// the database applies to records arriving late or from several replicas) gives too; a test
/// checks each one. The last line is kept rather than the table applied because a concluded
/// payment's later line of the same state (settled up front, then the upstream failed) carries
/// the reason an operator reads in the receipts.
pub fn latest_states(entries: &[JournalEntry]) -> Vec<JournalEntry> {
    let mut order: Vec<&str> = Vec::new();
    let mut latest: HashMap<&str, &JournalEntry> = HashMap::new();
    for entry in entries {
        if latest.insert(entry.id.as_str(), entry).is_none() {
            order.push(entry.id.as_str());
        }
    }
    order
        .into_iter()
        .filter_map(|id| latest.get(id).map(|e| (*e).clone()))
        .collect()
}

/// Brings a restarted gateway back to where the journal left it: payments interrupted between
/// verification and a final state become pending (their settlement may have happened), and every
/// settled or pending authorization that has not expired is refused again by the replay guard.
pub async fn resume(
    journal: &dyn Journal,
    entries: &[JournalEntry],
    replay: &dyn ReplayGuard,
) -> Result<usize, JournalError> {
    let now = unix_now();
    let mut resumed = 0;
    let mut live = Vec::new();
    for entry in latest_states(entries) {
        let entry = if entry.state == PaymentState::Verified {
            let mut pending = entry.next(PaymentState::Pending);
            pending.reason = "interrupted_before_final_state".into();
            journal.append(pending.clone()).await?;
            pending
        } else {
            entry
        };
        if entry.state == PaymentState::Pending {
            resumed += 1;
        }
        if matches!(entry.state, PaymentState::Settled | PaymentState::Pending)
            && entry.valid_before > now
            && !entry.key.is_empty()
        {
            live.push((ReplayKey::from_recorded(&entry.key), entry.valid_before));
        }
    }
    replay.remember_settled(&live, now).await;
    Ok(resumed)
}

/// The facilitator to ask about a journal entry, if the configuration still has one.
pub type FacilitatorLookup<'a> = &'a (dyn Fn(&JournalEntry) -> Option<Arc<dyn Facilitator>> + Sync);

/// One pass over the pending entries: asks the facilitator that settled each, appends final states.
pub async fn reconcile_once(journal: &dyn Journal, facilitator_for: FacilitatorLookup<'_>) {
    for entry in journal.pending() {
        let Some(next) = check_pending(&entry, facilitator_for).await else {
            continue;
        };
        if let Err(e) = journal.append(next).await {
            tracing::error!(error = %e, "cannot record a reconciled settlement");
        }
    }
}

/// Asks the facilitator that settled a pending entry what became of it: the entry's final state,
/// or `None` while it is still open.
pub async fn check_pending(
    entry: &JournalEntry,
    facilitator_for: FacilitatorLookup<'_>,
) -> Option<JournalEntry> {
    let metrics = Metrics::global();
    let facilitator = facilitator_for(entry);
    let status = match (&facilitator, entry.transaction.is_empty()) {
        // Nothing to ask about: only the chain (or the facilitator's operator) can tell.
        (None, _) | (_, true) => Ok(SettlementLookup::Unknown),
        (Some(f), false) => {
            f.settlement_status(&entry.transaction, &entry.network)
                .await
        }
    };
    let status = match (status, &facilitator) {
        (Ok(SettlementLookup::Unknown), Some(f)) if !entry.settle_request.is_empty() => {
            settle_again(f.as_ref(), entry).await
        }
        (status, _) => status,
    };
    let next = match status {
        Ok(SettlementLookup::Settled { transaction }) => {
            metrics
                .reconciliations
                .with_label_values(&["settled"])
                .inc();
            let mut next = entry.next(PaymentState::Settled);
            if !transaction.is_empty() {
                next.transaction = transaction;
            }
            // Why the buyer may be owed a refund (an answer cut or failed after the payment was
            // sent) still holds once the settlement is confirmed.
            if is_refund_candidate(PaymentState::Pending, &entry.reason) {
                next.reason = entry.reason.clone();
            }
            next
        }
        Ok(SettlementLookup::Failed { reason }) => {
            metrics.reconciliations.with_label_values(&["failed"]).inc();
            let mut next = entry.next(PaymentState::Failed);
            next.reason = reason;
            next
        }
        Ok(SettlementLookup::Pending) => {
            metrics
                .reconciliations
                .with_label_values(&["pending"])
                .inc();
            return None;
        }
        Ok(SettlementLookup::Unknown) => {
            metrics
                .reconciliations
                .with_label_values(&["unknown"])
                .inc();
            return None;
        }
        Err(e) => {
            metrics.reconciliations.with_label_values(&["error"]).inc();
            tracing::warn!(id = %entry.id, error = %e, "cannot reconcile a pending settlement yet");
            return None;
        }
    };
    tracing::info!(id = %next.id, state = next.state.as_str(), tx = %next.transaction, "pending settlement reconciled");
    Some(next)
}

/// Sends the recorded settle request again and judges the answer as the first one was judged
/// ([`judge_settle`], against the payment the entry records). A facilitator that broadcast it
/// already reports that transaction (or `settlement_pending` while it waits); the authorization's
/// nonce keeps the chain from moving the money twice.
async fn settle_again(
    facilitator: &dyn Facilitator,
    entry: &JournalEntry,
) -> Result<SettlementLookup, crate::facilitator::FacilitatorError> {
    let Ok(body) = serde_json::from_str::<serde_json::Value>(&entry.settle_request) else {
        return Ok(SettlementLookup::Unknown);
    };
    let request = crate::facilitator::FacilitatorRequest {
        x402_version: body["x402Version"]
            .as_u64()
            .and_then(|v| u8::try_from(v).ok())
            .unwrap_or(2),
        payment_payload: body["paymentPayload"].clone(),
        payment_requirements: body["paymentRequirements"].clone(),
        sync_settle: true,
        resource: None,
    };
    // The payment as recorded; a journal line whose amount cannot be read cannot be checked,
    // so it stays open for an operator.
    let Ok(amount) = entry.amount.parse::<u128>() else {
        return Ok(SettlementLookup::Unknown);
    };
    let expected = ExpectedSettlement {
        payer: &entry.payer,
        network: request.network(),
        caip2_network: &entry.network,
        amount,
    };
    let settlement = facilitator.settle(&request).await?;
    let verdict = judge_settle(&SettleAnswer::Replied(settle_reply(&settlement)), &expected);
    Ok(resent_lookup(verdict))
}

/// What a verdict on a resent settle request says about a pending payment.
fn resent_lookup(verdict: SettleVerdict) -> SettlementLookup {
    match verdict.outcome {
        SettleOutcome::Settled(Finality::Confirmed) => SettlementLookup::Settled {
            transaction: verdict.transaction,
        },
        SettleOutcome::Settled(Finality::Pending | Finality::Batched) => SettlementLookup::Pending,
        // The facilitator's own "still waiting": counted as pending, not unknown.
        SettleOutcome::Unknown { detail } if detail == "settlement_pending" => {
            SettlementLookup::Pending
        }
        SettleOutcome::Unknown { .. } => SettlementLookup::Unknown,
        // A refusal of the resend is not final, unlike a refusal of the first attempt: the first
        // attempt may have settled (its nonce is then used, and the resend is refused for that
        // very reason), so the payment stays pending for an operator to check on chain.
        SettleOutcome::Refused { .. } => SettlementLookup::Unknown,
        // Not reachable from a reply (only from a failed call, which stays an error here).
        SettleOutcome::NotSent(_) => SettlementLookup::Unknown,
    }
}

pub use crate::time::{parse_rfc3339, rfc3339, rfc3339_now, unix_now};

/// Parses what `--since` accepts: unix seconds, an RFC 3339 UTC time (`2026-05-01T12:00:00Z`),
/// a date (`2026-05-01`), or a duration back from now (`90m`, `24h`). Returns unix milliseconds.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let secs: i64 = t.parse().map_err(|_| format!("`{t}` is too large"))?;
        return Ok(secs.saturating_mul(1000));
    }
    if let Ok(ago) = crate::config::parse_duration(t) {
        return Ok(now_ms - ago.as_millis() as i64);
    }
    parse_rfc3339(t).ok_or_else(|| {
        format!(
            "`{t}` is not unix seconds, an RFC 3339 UTC time, a date or a duration like \"24h\""
        )
    })
}

#[cfg(test)]
mod tests;
