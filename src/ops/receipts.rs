//! `x402-gateway receipts`: the journal as a list of payments, one row per payment in its latest
//! state, for accounting and for checking pending settlements by hand.

use crate::ops::journal::{latest_states, JournalEntry, PaymentState};
use crate::payment::is_refund_candidate;
use crate::time::parse_rfc3339;

/// Which payments a listing shows; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptQuery {
    /// First recorded at or after this time (unix milliseconds).
    pub since_ms: Option<i64>,
    /// First recorded before this time (unix milliseconds).
    pub until_ms: Option<i64>,
    /// The route label, e.g. `GET /paid`.
    pub route: Option<String>,
    /// The payer's address, in any case.
    pub payer: Option<String>,
    /// The payment's latest state.
    pub state: Option<PaymentState>,
    /// Only refund candidates: settled (or pending) payments whose answer did not reach the
    /// buyer whole ([`is_refund_candidate`]).
    pub refund_candidates: bool,
    /// One page instead of every payment: newest first.
    pub page: Option<Page>,
}

/// A page of payments, newest first (by first recorded time, then id, both descending).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// Only payments before this (first recorded time, id) position: where the last page ended.
    pub after: Option<(String, String)>,
    pub limit: usize,
}

impl Page {
    /// `rows` (already filtered) as this page.
    fn apply(&self, mut rows: Vec<Receipt>) -> Vec<Receipt> {
        rows.sort_by(|a, b| {
            (b.first_time.as_str(), b.entry.id.as_str())
                .cmp(&(a.first_time.as_str(), a.entry.id.as_str()))
        });
        rows.into_iter()
            .filter(|r| match &self.after {
                None => true,
                Some((time, id)) => {
                    (r.first_time.as_str(), r.entry.id.as_str()) < (time.as_str(), id.as_str())
                }
            })
            .take(self.limit)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptFormat {
    Csv,
    Json,
}

const COLUMNS: [&str; 12] = [
    "time",
    "id",
    "state",
    "route",
    "payer",
    "amount",
    "asset",
    "network",
    "pay_to",
    "transaction",
    "facilitator",
    "reason",
];

/// One payment in its latest state, with the time it was first recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// RFC 3339: the time of the payment's first journal line.
    pub first_time: String,
    pub entry: JournalEntry,
}

/// The payments of a journal file that `query` selects, in their latest state, in journal order.
pub fn receipts(entries: &[JournalEntry], query: &ReceiptQuery) -> Vec<JournalEntry> {
    receipt_rows(entries, query)
        .into_iter()
        .map(|r| r.entry)
        .collect()
}

/// [`receipts`] with each payment's first recorded time, or one page of them (`query.page`): the
/// reader of journal files that the `receipts` command and the admin API share.
pub fn receipt_rows(entries: &[JournalEntry], query: &ReceiptQuery) -> Vec<Receipt> {
    let first_seen: std::collections::HashMap<&str, &str> = entries
        .iter()
        .rev()
        .map(|e| (e.id.as_str(), e.time.as_str()))
        .collect();
    let rows: Vec<Receipt> = latest_states(entries)
        .into_iter()
        .filter_map(|e| {
            let first_time = first_seen.get(e.id.as_str()).copied().unwrap_or_default();
            let in_range = match (query.since_ms, query.until_ms) {
                (None, None) => true,
                (since, until) => parse_rfc3339(first_time)
                    .is_some_and(|t| since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)),
            };
            in_range.then(|| Receipt {
                first_time: first_time.to_string(),
                entry: e,
            })
        })
        .filter(|r| {
            query
                .route
                .as_ref()
                .is_none_or(|route| *route == r.entry.route)
        })
        .filter(|r| {
            query
                .payer
                .as_ref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&r.entry.payer))
        })
        .filter(|r| query.state.is_none_or(|s| s == r.entry.state))
        .filter(|r| !query.refund_candidates || is_refund_candidate(r.entry.state, &r.entry.reason))
        .collect();
    match &query.page {
        Some(page) => page.apply(rows),
        None => rows,
    }
}

pub fn render(receipts: &[JournalEntry], format: ReceiptFormat) -> String {
    match format {
        ReceiptFormat::Json => {
            let rows: Vec<serde_json::Value> = receipts
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    if let Some(obj) = v.as_object_mut() {
                        obj.remove("key");
                        obj.remove("valid_before");
                    }
                    v
                })
                .collect();
            let mut text = serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".into());
            text.push('\n');
            text
        }
        ReceiptFormat::Csv => {
            let mut out = COLUMNS.join(",");
            out.push('\n');
            for e in receipts {
                let fields = [
                    e.time.as_str(),
                    &e.id,
                    e.state.as_str(),
                    &e.route,
                    &e.payer,
                    &e.amount,
                    &e.asset,
                    &e.network,
                    &e.pay_to,
                    &e.transaction,
                    &e.facilitator,
                    &e.reason,
                ];
                let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
            out
        }
    }
}

/// RFC 4180 quoting; a leading formula character is neutralised so spreadsheets do not run it.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}
