//! What the admin API answers, computed from journal rows and the configuration: the payments a
//! query selects, one page at a time; revenue by route, network and asset over time buckets; the
//! payments that need an operator; the routes and prices without any secret; and who may ask.
//! Plain functions over plain values: the admin listener ([`super::admin`]) reads the journal with
//! the readers the `receipts` command uses and writes the HTTP answers.

use crate::config::{redacted_url, AdminConfig, GatewayConfig, UnmatchedPolicy};
use crate::ops::journal::{JournalEntry, PaymentState};
use crate::ops::receipts::{Receipt, ReceiptQuery};
use crate::payment::NOTHING_USED;
use crate::pricing::{format_units, PricedRoute, RouteKind};
use crate::time::{parse_rfc3339, rfc3339};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Where the API's endpoints live on the admin listener.
pub const API_PREFIX: &str = "/admin/api/";
/// Payments per page when `limit` is not given, and the most a page may hold.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// A payment verified this long ago and never concluded belongs to a request that died (the
/// reconciliation of the PostgreSQL ledger uses the same bound).
pub const INTERRUPTED_AFTER_MS: i64 = 15 * 60 * 1000;

/// A refusal: its HTTP status, a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(400, "invalid_parameter", message)
    }

    pub fn body(&self) -> Value {
        json!({"error": self.code, "message": self.message})
    }
}

/// Who may use the API: with a token, whoever presents it as `Authorization: Bearer <token>`;
/// without one, loopback peers only.
pub fn authorize(
    token: Option<&str>,
    authorization: Option<&[u8]>,
    peer: Option<IpAddr>,
) -> Result<(), ApiError> {
    match token {
        Some(token) => {
            let presented = authorization.and_then(bearer_token);
            if presented.is_some_and(|p| same_secret(p, token.as_bytes())) {
                Ok(())
            } else {
                Err(ApiError::new(
                    401,
                    "unauthorized",
                    "send the [admin] token as `Authorization: Bearer <token>`",
                ))
            }
        }
        None if peer.is_some_and(is_loopback) => Ok(()),
        None => Err(ApiError::new(
            403,
            "loopback_only",
            "no [admin] token is configured, so the admin API answers only on loopback",
        )),
    }
}

/// The credentials of an `Authorization: Bearer …` header value.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Compares two secrets in time independent of where they differ and of their lengths: both are
/// hashed, and the digests compared with no early exit.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Whether a peer address is this machine's loopback (IPv4, IPv6, or IPv4 mapped into IPv6).
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The query string as decoded name/value pairs.
pub fn params(query: Option<&str>) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An RFC 3339 time (`2026-05-01T12:00:00Z`, `2026-05-01T14:00:00+02:00`, fractions allowed) or a
/// date (`2026-05-01`, midnight UTC), as unix milliseconds.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    // A numeric offset after the time: `+hh:mm` or `-hh:mm`.
    if text.len() > 6 && text.contains('T') {
        let (head, tail) = text.split_at(text.len() - 6);
        let tail = tail.as_bytes();
        if matches!(tail[0], b'+' | b'-') && tail[3] == b':' {
            let hours: i64 = std::str::from_utf8(&tail[1..3]).ok()?.parse().ok()?;
            let minutes: i64 = std::str::from_utf8(&tail[4..6]).ok()?.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = (hours * 60 + minutes) * 60_000;
            let local = parse_rfc3339(head)?;
            return Some(if tail[0] == b'+' {
                local - offset
            } else {
                local + offset
            });
        }
    }
    parse_rfc3339(text)
}

/// Checks that only `allowed` parameters are present, each once.
fn known(params: &[(String, String)], allowed: &[&str]) -> Result<(), ApiError> {
    for (i, (name, _)) in params.iter().enumerate() {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::invalid(format!(
                "unknown parameter `{name}`; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
        if params[..i].iter().any(|(n, _)| n == name) {
            return Err(ApiError::invalid(format!("`{name}` is given twice")));
        }
    }
    Ok(())
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// The journal filter shared by the endpoints: `state`, `route`, `payer`, `from`, `to`.
fn filter(params: &[(String, String)]) -> Result<ReceiptQuery, ApiError> {
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        param(params, name)
            .map(|t| {
                parse_time(t).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "`{name}` = `{t}` is not an RFC 3339 time such as 2026-05-01T12:00:00Z"
                    ))
                })
            })
            .transpose()
    };
    let since_ms = time("from")?;
    let until_ms = time("to")?;
    if let (Some(from), Some(to)) = (since_ms, until_ms) {
        if from > to {
            return Err(ApiError::invalid("`from` is after `to`"));
        }
    }
    let state = param(params, "state")
        .map(|s| {
            PaymentState::parse(s).ok_or_else(|| {
                ApiError::invalid(format!(
                    "`state` = `{s}`: expected verified, settled, pending, failed or not_charged"
                ))
            })
        })
        .transpose()?;
    Ok(ReceiptQuery {
        since_ms,
        until_ms,
        route: param(params, "route").map(str::to_string),
        payer: param(params, "payer").map(str::to_string),
        state,
        refund_candidates: false,
        page: None,
    })
}

/// Where a page starts: after the payment with this first time and id (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub first_time: String,
    pub id: String,
}

impl Cursor {
    /// Opaque to clients: the position, base64url-encoded.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(format!("{}\n{}", self.first_time, self.id))
    }

    pub fn decode(text: &str) -> Option<Self> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (first_time, id) = text.split_once('\n')?;
        parse_rfc3339(first_time)?;
        Some(Self {
            first_time: first_time.to_string(),
            id: id.to_string(),
        })
    }

    fn of(row: &Receipt) -> Self {
        Self {
            first_time: row.first_time.clone(),
            id: row.entry.id.clone(),
        }
    }
}

/// `GET /admin/api/payments`: a filter, a page size and where the page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentsQuery {
    pub filter: ReceiptQuery,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

pub fn payments_query(params: &[(String, String)]) -> Result<PaymentsQuery, ApiError> {
    known(
        params,
        &["state", "route", "payer", "from", "to", "limit", "cursor"],
    )?;
    let limit = match param(params, "limit") {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::invalid(format!("`limit` = `{l}`: expected 1 to {MAX_LIMIT}"))
            })?,
    };
    let cursor = param(params, "cursor")
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| {
                ApiError::invalid("`cursor` is not one this API gave (use `next_cursor`)")
            })
        })
        .transpose()?;
    Ok(PaymentsQuery {
        filter: filter(params)?,
        limit,
        cursor,
    })
}

/// Newest first: by first recorded time, then id, both descending.
fn newest_first(rows: &mut [Receipt]) {
    rows.sort_by(|a, b| {
        (b.first_time.as_str(), b.entry.id.as_str())
            .cmp(&(a.first_time.as_str(), a.entry.id.as_str()))
    });
}

/// One page of `rows` (already filtered), newest first, and the cursor of the next page when
/// there are more.
pub fn page(
    mut rows: Vec<Receipt>,
    limit: usize,
    cursor: Option<&Cursor>,
) -> (Vec<Receipt>, Option<Cursor>) {
    newest_first(&mut rows);
    let mut rest = rows.into_iter().filter(|r| match cursor {
        None => true,
        Some(c) => {
            (r.first_time.as_str(), r.entry.id.as_str()) < (c.first_time.as_str(), c.id.as_str())
        }
    });
    let page: Vec<Receipt> = rest.by_ref().take(limit).collect();
    let next = rest.next().and(page.last().map(Cursor::of));
    (page, next)
}

/// Why a payment needs an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Settled but not final yet (broadcast, awaiting confirmation); reconciliation follows it.
    Pending,
    /// The settlement's outcome is unknown (a facilitator error or timeout, a request cut short):
    /// money may have moved; reconciliation asks again, an operator may check the chain.
    UnknownOutcome,
    /// Verified long ago and never concluded: the request's process died mid-payment.
    Interrupted,
    /// Settled, then the upstream failed (or the tool reported an error): the buyer paid for an
    /// answer it did not get, and may be owed a refund.
    RefundCandidate,
}

impl Attention {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::UnknownOutcome => "unknown_outcome",
            Self::Interrupted => "interrupted",
            Self::RefundCandidate => "refund_candidate",
        }
    }
}

/// A reason the lifecycle records when the upstream's answer was a failure.
fn upstream_failure(reason: &str) -> bool {
    reason.starts_with("upstream_") || matches!(reason, "tool_error" | "jsonrpc_error")
}

/// Whether (and why) a payment in its latest state needs an operator, `now_ms` being now.
pub fn attention(entry: &JournalEntry, now_ms: i64) -> Option<Attention> {
    match entry.state {
        PaymentState::Pending if entry.reason.is_empty() || upstream_failure(&entry.reason) => {
            Some(Attention::Pending)
        }
        PaymentState::Pending => Some(Attention::UnknownOutcome),
        PaymentState::Settled if !entry.reason.is_empty() && entry.reason != NOTHING_USED => {
            Some(Attention::RefundCandidate)
        }
        PaymentState::Verified => parse_rfc3339(&entry.time)
            .is_some_and(|t| now_ms - t > INTERRUPTED_AFTER_MS)
            .then_some(Attention::Interrupted),
        _ => None,
    }
}

/// `GET /admin/api/attention` takes the time and route filters.
pub fn attention_query(params: &[(String, String)]) -> Result<ReceiptQuery, ApiError> {
    known(params, &["route", "payer", "from", "to"])?;
    filter(params)
}

/// The payments of `rows` that need an operator, newest first.
pub fn needing_attention(mut rows: Vec<Receipt>, now_ms: i64) -> Vec<(Attention, Receipt)> {
    newest_first(&mut rows);
    rows.into_iter()
        .filter_map(|r| attention(&r.entry, now_ms).map(|a| (a, r)))
        .collect()
}

/// A payment as the API shows it: no replay key, no signed settle request; its amount also in
/// the asset's units when the asset is known.
pub fn payment_json(
    row: &Receipt,
    admin: &AdminConfig,
    assets: AssetLookup<'_>,
    now_ms: i64,
) -> Value {
    let e = &row.entry;
    let known = assets(&e.network, &e.asset);
    let display = known.as_ref().and_then(|(_, decimals)| {
        e.amount
            .parse::<u128>()
            .ok()
            .map(|a| format_units(a, *decimals))
    });
    json!({
        "id": e.id,
        "first_time": row.first_time,
        "time": e.time,
        "state": e.state.as_str(),
        "route": e.route,
        "payer": e.payer,
        "amount": e.amount,
        "display": display,
        "symbol": known.map(|(symbol, _)| symbol),
        "asset": e.asset,
        "network": e.network,
        "pay_to": e.pay_to,
        "transaction": e.transaction,
        "explorer_url": admin.explorer_url(&e.network, &e.transaction),
        "facilitator": e.facilitator,
        "reason": e.reason,
        "attention": attention(e, now_ms).map(Attention::as_str),
    })
}

/// The width of a revenue bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn millis(self) -> i64 {
        match self {
            Self::Hour => 3_600_000,
            Self::Day => 86_400_000,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    /// The start of the bucket holding `ms` (UTC).
    pub fn start(self, ms: i64) -> i64 {
        ms - ms.rem_euclid(self.millis())
    }
}

/// `GET /admin/api/revenue`: settled payments in a time range (and of a route), by bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevenueQuery {
    pub filter: ReceiptQuery,
    pub bucket: Bucket,
}

pub fn revenue_query(params: &[(String, String)]) -> Result<RevenueQuery, ApiError> {
    known(params, &["bucket", "route", "from", "to"])?;
    let bucket = match param(params, "bucket") {
        None | Some("hour") => Bucket::Hour,
        Some("day") => Bucket::Day,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "`bucket` = `{other}`: expected hour or day"
            )))
        }
    };
    let mut filter = filter(params)?;
    filter.state = Some(PaymentState::Settled);
    Ok(RevenueQuery { filter, bucket })
}

/// An asset's symbol and decimals, when the configuration knows it: (network, address).
pub type AssetLookup<'a> = &'a dyn Fn(&str, &str) -> Option<(String, u8)>;

#[derive(Default)]
struct Sum {
    amount: u128,
    count: u64,
}

impl Sum {
    fn add(&mut self, amount: u128) {
        self.amount = self.amount.saturating_add(amount);
        self.count += 1;
    }
}

/// Revenue of the settled payments among `rows`: per bucket, route, network and asset (the
/// bucket of a payment is the one of its first recorded time), and totals per route and per
/// network and asset. Amounts are atomic units as decimal strings; `display` is in the asset's
/// units when its decimals are known. Payments whose amount cannot be read are counted apart.
pub fn revenue(rows: &[Receipt], bucket: Bucket, assets: AssetLookup<'_>) -> Value {
    type Key = (String, String, String);
    let mut series: BTreeMap<(i64, Key), Sum> = BTreeMap::new();
    let mut by_route: BTreeMap<Key, Sum> = BTreeMap::new();
    let mut by_asset: BTreeMap<(String, String), Sum> = BTreeMap::new();
    let mut unreadable = 0u64;
    for row in rows
        .iter()
        .filter(|r| r.entry.state == PaymentState::Settled)
    {
        let e = &row.entry;
        let (Some(at), Ok(amount)) = (parse_rfc3339(&row.first_time), e.amount.parse::<u128>())
        else {
            unreadable += 1;
            continue;
        };
        let key = (e.route.clone(), e.network.clone(), e.asset.clone());
        series
            .entry((bucket.start(at), key.clone()))
            .or_default()
            .add(amount);
        by_route.entry(key).or_default().add(amount);
        by_asset
            .entry((e.network.clone(), e.asset.clone()))
            .or_default()
            .add(amount);
    }
    let money = |network: &str, asset: &str, sum: &Sum| -> Value {
        let known = assets(network, asset);
        json!({
            "network": network,
            "asset": asset,
            "symbol": known.as_ref().map(|(s, _)| s.clone()),
            "decimals": known.as_ref().map(|(_, d)| *d),
            "amount": sum.amount.to_string(),
            "display": known.as_ref().map(|(_, d)| format_units(sum.amount, *d)),
            "count": sum.count,
        })
    };
    let with = |mut value: Value, fields: &[(&str, Value)]| {
        if let Some(object) = value.as_object_mut() {
            for (name, v) in fields {
                object.insert((*name).to_string(), v.clone());
            }
        }
        value
    };
    json!({
        "bucket": bucket.as_str(),
        "series": series
            .iter()
            .map(|((start, (route, network, asset)), sum)| {
                with(
                    money(network, asset, sum),
                    &[("start", json!(rfc3339(*start))), ("route", json!(route))],
                )
            })
            .collect::<Vec<_>>(),
        "routes": by_route
            .iter()
            .map(|((route, network, asset), sum)| {
                with(money(network, asset, sum), &[("route", json!(route))])
            })
            .collect::<Vec<_>>(),
        "totals": by_asset
            .iter()
            .map(|((network, asset), sum)| money(network, asset, sum))
            .collect::<Vec<_>>(),
        "unreadable": unreadable,
    })
}

/// Scheme, host and port of a URL, nothing that may carry a credential (user, password, path,
/// query).
fn origin(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.host_str().is_some() => u.origin().ascii_serialization(),
        _ => "(unreadable url)".to_string(),
    }
}

fn options_json(priced: &PricedRoute) -> Vec<Value> {
    priced
        .options
        .iter()
        .map(|o| {
            let r = &o.requirements;
            json!({
                "scheme": r.scheme,
                "network": r.network,
                "asset": r.asset,
                "symbol": o.asset_symbol,
                "decimals": o.decimals,
                "amount": r.amount,
                "price": format_units(o.amount, o.decimals),
                "pay_to": r.pay_to,
                "max_timeout_seconds": r.max_timeout_seconds,
            })
        })
        .collect()
}

fn priced_json(priced: &PricedRoute) -> Value {
    json!({
        "description": priced.description,
        "settle": priced.settle.as_str(),
        "metered": priced.metering.is_some(),
        "access_seconds": priced.access.map(|a| a.as_secs()),
        "options": options_json(priced),
        "price_rules": priced
            .price_rules
            .iter()
            .map(|rule| json!({"when": rule.condition.describe(), "options": options_json(&rule.priced)}))
            .collect::<Vec<_>>(),
    })
}

/// `GET /admin/api/config`: the routes and their prices, the facilitators, journal, shared store
/// and explorers, with every credential left out (URLs are shown as their origin, or with the
/// password masked).
pub fn config_json(config: &GatewayConfig) -> Value {
    let routes: Vec<Value> = config
        .routes
        .in_file_order()
        .iter()
        .map(|route| {
            let mut value = match &route.kind {
                RouteKind::Free => json!({"kind": "free"}),
                RouteKind::Priced(priced) => {
                    let mut v = priced_json(priced);
                    v["kind"] = json!("priced");
                    v
                }
                RouteKind::Mcp(mcp) => json!({
                    "kind": "mcp",
                    "items": mcp
                        .items
                        .iter()
                        .map(|item| {
                            let mut v = priced_json(&item.priced);
                            v["item"] = json!(item.label());
                            v
                        })
                        .collect::<Vec<_>>(),
                }),
            };
            value["route"] = json!(route.label());
            value
        })
        .collect();
    let facilitators: Vec<Value> = config
        .facilitators
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "kind": f.kind.as_str(),
                "url": f.url.as_deref().map(origin),
                "networks": f.networks,
                "fallback": f.fallback,
            })
        })
        .collect();
    let journal = match &config.journal {
        None => json!({"kind": "none"}),
        Some(j) if j.url.is_some() => {
            json!({"kind": "postgres", "spool": j.path.display().to_string()})
        }
        Some(j) => json!({"kind": "file", "path": j.path.display().to_string()}),
    };
    json!({
        "routes": routes,
        "unmatched": match config.unmatched {
            UnmatchedPolicy::Proxy => "proxy",
            UnmatchedPolicy::Deny => "deny",
        },
        "upstream": origin(&config.upstream.url),
        "facilitators": facilitators,
        "journal": journal,
        "redis": config.redis.as_ref().map(|r| redacted_url(r.url.expose())),
        "admin": {
            "listen": config.admin.listen.to_string(),
            "token": config.admin.token.is_some(),
            "explorers": config.admin.explorers,
        },
    })
}

#[cfg(test)]
#[path = "admin_api_tests.rs"]
mod tests;
