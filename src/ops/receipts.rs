//! `x402-gateway receipts`: the journal as a list of payments, one row per payment in its latest
//! state, for accounting and for checking pending settlements by hand.

use crate::ops::journal::{latest_states, JournalEntry, PaymentState};
use crate::time::parse_rfc3339;

/// Which payments a listing shows; every filter given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptQuery {
    /// First recorded at or after this time (unix milliseconds).
    pub since_ms: Option<i64>,
    /// The route label, e.g. `GET /paid`.
    pub route: Option<String>,
    /// The payer's address, in any case.
    pub payer: Option<String>,
    /// The payment's latest state.
    pub state: Option<PaymentState>,
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

/// The payments of a journal file that `query` selects, in their latest state, in journal order.
pub fn receipts(entries: &[JournalEntry], query: &ReceiptQuery) -> Vec<JournalEntry> {
    let first_seen: std::collections::HashMap<&str, &str> = entries
        .iter()
        .rev()
        .map(|e| (e.id.as_str(), e.time.as_str()))
        .collect();
    latest_states(entries)
        .into_iter()
        .filter(|e| match query.since_ms {
            None => true,
            Some(since) => first_seen
                .get(e.id.as_str())
                .and_then(|t| parse_rfc3339(t))
                .is_some_and(|t| t >= since),
        })
        .filter(|e| query.route.as_ref().is_none_or(|r| *r == e.route))
        .filter(|e| {
            query
                .payer
                .as_ref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&e.payer))
        })
        .filter(|e| query.state.is_none_or(|s| s == e.state))
        .collect()
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
