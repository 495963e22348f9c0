//! `kind = "okx"`: OKX Onchain OS Payment.
//!
//! Two generations of the API: `v2` (`/api/v6/pay/x402/*`, standard x402 v2 bodies, `data` an
//! object) and `legacy` (`/api/v6/x402/*`, `chainIndex`, v1 requirements, `data` an array). Every
//! call is signed with the OKX HMAC scheme over the exact bytes sent, with a fresh timestamp per
//! attempt. Answers come in the envelope `{code, msg, data}` whose `code` may be a string or a
//! number and which can signal an error inside HTTP 200.
//!
//! `exact` settlement honours `syncSettle` (always sent): `pending` is served and recorded as
//! pending, `timeout` is polled on `/settle/status` until a deadline. `aggr_deferred` settles into
//! a batch at once with an empty transaction.

use super::transport::{excerpt, Backoff, Caller, Transport, Unwrapped};
use super::{Facilitator, FacilitatorError, FacilitatorRequest, Settlement, SettlementLookup};
use crate::config::{FacilitatorConfig, OkxApi, Secret};
use crate::payment::Finality;
use crate::payment::AGGR_DEFERRED;
use crate::x402::{chain_id_of, SettleResponse, SupportedKind, SupportedResponse, VerifyResponse};
use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const V2_PREFIX: &str = "/api/v6/pay/x402";
const LEGACY_PREFIX: &str = "/api/v6/x402";
/// Only the current API documents a status endpoint; legacy settlements are polled there too.
const STATUS_PATH: &str = "/api/v6/pay/x402/settle/status";
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Rate-limited verify/supported calls: three more attempts, backing off from 250 ms and
/// doubling, so a request waits at most a couple of seconds.
const BACKOFF: Backoff = Backoff {
    retries: 3,
    first: Duration::from_millis(250),
    max: Duration::from_secs(2),
    doubling: true,
};

/// `OK-ACCESS-TIMESTAMP`: UTC ISO-8601 with milliseconds and `Z`, e.g. `2026-03-30T10:00:00.000Z`.
pub fn okx_timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// `OK-ACCESS-SIGN`: base64(HMAC-SHA256(secret, timestamp + METHOD + path-with-query + body)).
pub fn okx_signature(
    secret: &str,
    timestamp: &str,
    method: &str,
    path_with_query: &str,
    body: &str,
) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(method.as_bytes());
    mac.update(path_with_query.as_bytes());
    mac.update(body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Reasons OKX gives for refusing a payment, as found in `msg`; the first match names it (so
/// "invalid signature, nonce_used" is `nonce_used`).
const PAYMENT_REASONS: &[&str] = &[
    "nonce_used",
    "insufficient_balance",
    "insufficient_funds",
    "invalid_signature",
    "not_yet_valid",
    "expired",
    "param_mismatch",
    "toaddr mismatch",
    "amount mismatch",
    "unsupported_chain",
    "payer_blocked",
    "risk_address",
    "resource mismatch",
    "no matching payment option",
    "invalid payment header",
    "payment processing",
    "onchain_error",
];

fn payment_reason(code: i64, msg: &str) -> Option<String> {
    match code {
        80007 => return Some("risk_address".into()),
        81004 => return Some("unsupported_chain".into()),
        10002 => return Some("aa_account_not_found".into()),
        _ => {}
    }
    let lower = msg.to_ascii_lowercase();
    PAYMENT_REASONS
        .iter()
        .find(|r| lower.contains(*r))
        .map(|r| r.replace(' ', "_"))
}

fn code_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The one answer in `data`: the legacy API wraps it in an array.
fn single(data: Value) -> Result<Value, FacilitatorError> {
    match data {
        Value::Array(items) => items
            .into_iter()
            .next()
            .filter(Value::is_object)
            .ok_or_else(|| FacilitatorError::Garbage("envelope `data` holds no answer".into())),
        Value::Object(_) => Ok(data),
        other => Err(FacilitatorError::Garbage(format!(
            "envelope `data` is `{other}`"
        ))),
    }
}

/// Removes the `{code, msg, data}` envelope. `code` may be a string or a number; `data` an object,
/// an array (its first element) or null; a body without `code` is the data itself.
fn unwrap_envelope(status: u16, body: &[u8]) -> Result<Unwrapped, FacilitatorError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let envelope = json.as_ref().and_then(|v| v.as_object());
    let code = envelope.and_then(|o| o.get("code").or_else(|| o.get("error_code")));
    let Some(code) = code else {
        return match (status, json) {
            (429, _) => Err(FacilitatorError::RateLimited(format!(
                "HTTP 429: {}",
                excerpt(body)
            ))),
            (401 | 403, _) => Err(FacilitatorError::Credentials(format!("HTTP {status}"))),
            (200..=299, Some(value)) if value.is_object() => Ok(Unwrapped::Data(value)),
            (200..=299, _) => Err(FacilitatorError::Garbage(format!(
                "HTTP {status} with body `{}`",
                excerpt(body)
            ))),
            _ => Err(FacilitatorError::Status {
                status,
                body: excerpt(body),
            }),
        };
    };
    let code = code_of(code).ok_or_else(|| {
        FacilitatorError::Garbage(format!("envelope code `{code}` is not a number"))
    })?;
    let msg = envelope
        .and_then(|o| o.get("msg").or_else(|| o.get("error_message")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if code == 0 {
        let data = envelope
            .and_then(|o| o.get("data"))
            .cloned()
            .unwrap_or(Value::Null);
        return match data {
            Value::Object(_) => Ok(Unwrapped::Data(data)),
            Value::Array(ref items) if !items.is_empty() => Ok(Unwrapped::Data(data)),
            _ => Err(FacilitatorError::Garbage(format!(
                "envelope code 0 without data: `{}`",
                excerpt(body)
            ))),
        };
    }
    if code == 50011 || status == 429 {
        return Err(FacilitatorError::RateLimited(format!(
            "OKX code {code}: {msg}"
        )));
    }
    if (50100..50200).contains(&code) || matches!(status, 401 | 403) {
        return Err(FacilitatorError::Credentials(format!(
            "OKX code {code}: {msg}"
        )));
    }
    if let Some(reason) = payment_reason(code, &msg) {
        return Ok(Unwrapped::Refusal {
            reason,
            message: format!("{msg} (OKX code {code})"),
        });
    }
    Err(FacilitatorError::Status {
        status,
        body: format!("OKX code {code}: {msg}"),
    })
}

pub struct OkxFacilitator {
    name: String,
    transport: Transport,
    base: String,
    /// The path part of `base`, which is part of what is signed.
    base_path: String,
    api: OkxApi,
    api_key: Secret,
    secret_key: Secret,
    passphrase: Secret,
    poll_deadline: Duration,
}

impl OkxFacilitator {
    pub fn new(config: &FacilitatorConfig) -> Result<Self, FacilitatorError> {
        let settings = config.okx.as_ref().ok_or_else(|| {
            FacilitatorError::Credentials(
                "kind \"okx\" without api_key, secret_key, passphrase".into(),
            )
        })?;
        let base = config
            .url
            .clone()
            .unwrap_or_else(|| crate::config::OKX_DEFAULT_URL.into());
        let base_path = url::Url::parse(&base)
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        let origin = base
            .trim_end_matches('/')
            .trim_end_matches(&base_path)
            .to_string();
        Ok(Self {
            name: config.name.clone(),
            transport: Transport::new(config.timeout)?,
            base: origin,
            base_path,
            api: settings.api,
            api_key: settings.api_key.clone(),
            secret_key: settings.secret_key.clone(),
            passphrase: settings.passphrase.clone(),
            poll_deadline: settings.settle_poll_deadline,
        })
    }

    fn prefix(&self) -> &'static str {
        match self.api {
            OkxApi::V2 => V2_PREFIX,
            OkxApi::Legacy => LEGACY_PREFIX,
        }
    }

    fn secrets(&self) -> [&str; 3] {
        [
            self.api_key.expose(),
            self.secret_key.expose(),
            self.passphrase.expose(),
        ]
    }

    /// One signed call; rate limits are retried with backoff when `retry` (verify, supported).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        retry: bool,
    ) -> Result<Unwrapped, FacilitatorError> {
        let signed_path = format!("{}{path}", self.base_path);
        let secrets = self.secrets();
        let caller = Caller {
            name: &self.name,
            secrets: &secrets,
            credentials_hint: "OKX refused the gateway's credentials: check api_key, secret_key, passphrase and the clock",
        };
        let build = || {
            let timestamp = okx_timestamp(SystemTime::now());
            let body_text = body.as_deref().unwrap_or_default();
            let signature = okx_signature(
                self.secret_key.expose(),
                &timestamp,
                method.as_str(),
                &signed_path,
                body_text,
            );
            let request = self
                .transport
                .client
                .request(method.clone(), format!("{}{signed_path}", self.base))
                .header("OK-ACCESS-KEY", self.api_key.expose())
                .header("OK-ACCESS-SIGN", signature)
                .header("OK-ACCESS-TIMESTAMP", &timestamp)
                .header("OK-ACCESS-PASSPHRASE", self.passphrase.expose())
                .header("Content-Type", "application/json");
            match &body {
                Some(text) => request.body(text.clone()),
                None => request,
            }
        };
        self.transport
            .call(&caller, retry.then_some(BACKOFF), build, |answer| {
                unwrap_envelope(answer.status, &answer.body)
            })
            .await
    }

    /// The body for `/verify` (`sync` = None) or `/settle`, in this API's shape.
    fn body(
        &self,
        request: &FacilitatorRequest,
        sync: Option<bool>,
    ) -> Result<String, FacilitatorError> {
        let mut body = match self.api {
            OkxApi::V2 => json!({
                "x402Version": request.x402_version,
                "paymentPayload": request.payment_payload,
                "paymentRequirements": request.payment_requirements,
            }),
            OkxApi::Legacy => legacy_body(request),
        };
        if let (Some(sync), Some(obj)) = (sync, body.as_object_mut()) {
            obj.insert("syncSettle".into(), Value::Bool(sync));
        }
        serde_json::to_string(&body).map_err(|e| FacilitatorError::Garbage(e.to_string()))
    }

    /// Reads a settle `data` in either API's shape into the standard answer.
    fn settle_response(
        &self,
        data: &Value,
        request: &FacilitatorRequest,
    ) -> Result<SettleResponse, FacilitatorError> {
        let mut data = data.clone();
        if let Some(obj) = data.as_object_mut() {
            if !obj.contains_key("transaction") {
                if let Some(tx) = obj.remove("txHash") {
                    obj.insert("transaction".into(), tx);
                }
            }
            if !obj.contains_key("errorReason") {
                if let Some(reason) = obj.remove("errorMsg") {
                    obj.insert("errorReason".into(), reason);
                }
            }
            let network_missing = obj
                .get("network")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty);
            if network_missing {
                obj.insert("network".into(), request.network().into());
            }
        }
        serde_json::from_value(data)
            .map_err(|e| FacilitatorError::Garbage(format!("settle answer: {e}")))
    }

    /// `GET /settle/status?txHash=`.
    fn status_path(tx: &str) -> String {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("txHash", tx)
            .finish();
        format!("{STATUS_PATH}?{query}")
    }

    /// Polls `/settle/status` every second until the settlement is final or the deadline passes.
    async fn poll(&self, mut response: SettleResponse) -> Result<Settlement, FacilitatorError> {
        let deadline = Instant::now() + self.poll_deadline;
        let tx = response.transaction.clone();
        let path = Self::status_path(&tx);
        let mut last = response.status.clone().unwrap_or_else(|| "timeout".into());
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
            let data = match self.call(reqwest::Method::GET, &path, None, false).await {
                Ok(Unwrapped::Data(data)) => single(data).unwrap_or(Value::Null),
                Ok(Unwrapped::Refusal { reason, .. }) => {
                    last = reason;
                    continue;
                }
                Err(e @ FacilitatorError::Credentials(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(facilitator = %self.name, error = %e, %tx, "settlement status not available yet");
                    continue;
                }
            };
            let status = data
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let text = |key: &str| {
                data.get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
            };
            match status {
                "success" => {
                    response.status = Some("success".into());
                    if let Some(t) = text("transaction") {
                        response.transaction = t;
                    }
                    return Ok(settled(response, Finality::Confirmed));
                }
                "failed" => {
                    response.success = false;
                    response.status = Some("failed".into());
                    response.error_reason =
                        text("errorReason").or_else(|| Some("settlement_failed".into()));
                    response.error_message = text("errorMessage")
                        .or_else(|| Some(format!("transaction {tx} failed on chain")));
                    return Ok(settled(response, Finality::Confirmed));
                }
                other => {
                    last = if other.is_empty() {
                        text("errorReason").unwrap_or_else(|| "unknown".into())
                    } else {
                        other.to_string()
                    };
                }
            }
        }
        Err(FacilitatorError::Unconfirmed {
            transaction: tx,
            status: last,
            deadline: self.poll_deadline,
        })
    }
}

/// A settlement whose `PAYMENT-RESPONSE` is the standard answer with OKX's `status`.
fn settled(response: SettleResponse, status: Finality) -> Settlement {
    let raw = serde_json::to_value(&response).unwrap_or(Value::Null);
    Settlement {
        response,
        raw,
        status,
    }
}

/// The legacy body: v1 requirements with `chainIndex`, the payment's signed part as a v1 payload.
fn legacy_body(request: &FacilitatorRequest) -> Value {
    let chain_index = chain_id_of(request.network())
        .map(|id| id.to_string())
        .unwrap_or_default();
    let payload = &request.payment_payload;
    let r = &request.payment_requirements;
    let scheme = request.scheme();
    let payment_payload = json!({
        "x402Version": 1,
        "scheme": scheme,
        "chainIndex": chain_index,
        "payload": payload.get("payload").cloned().unwrap_or(Value::Null),
    });
    let field = |v1: &str, v2: &str| {
        r.get(v1)
            .or_else(|| r.get(v2))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let resource = request.resource.as_ref();
    let payment_requirements = json!({
        "scheme": scheme,
        "chainIndex": chain_index,
        "maxAmountRequired": field("maxAmountRequired", "amount"),
        "resource": r.get("resource").cloned().unwrap_or_else(|| resource.map(|x| x.url.clone()).unwrap_or_default().into()),
        "description": r.get("description").cloned().unwrap_or_else(|| resource.map(|x| x.description.clone()).unwrap_or_default().into()),
        "mimeType": r.get("mimeType").cloned().unwrap_or_else(|| resource.map(|x| x.mime_type.clone()).unwrap_or_default().into()),
        "payTo": field("payTo", "payTo"),
        "maxTimeoutSeconds": field("maxTimeoutSeconds", "maxTimeoutSeconds"),
        "asset": field("asset", "asset"),
        "outputSchema": r.get("outputSchema").cloned().unwrap_or(Value::Null),
        "extra": r.get("extra").cloned().unwrap_or_else(|| json!({})),
    });
    json!({
        "x402Version": 1,
        "chainIndex": chain_index,
        "paymentPayload": payment_payload,
        "paymentRequirements": payment_requirements,
    })
}

#[async_trait]
impl Facilitator for OkxFacilitator {
    fn name(&self) -> &str {
        &self.name
    }

    /// One `/settle/status` look-up, for the journal's reconciliation of pending settlements.
    async fn settlement_status(
        &self,
        transaction: &str,
        _network: &str,
    ) -> Result<SettlementLookup, FacilitatorError> {
        if transaction.is_empty() {
            return Ok(SettlementLookup::Unknown);
        }
        let path = Self::status_path(transaction);
        let data = match self.call(reqwest::Method::GET, &path, None, false).await? {
            Unwrapped::Data(data) => single(data)?,
            Unwrapped::Refusal { .. } => return Ok(SettlementLookup::Pending),
        };
        let text = |key: &str| {
            data.get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(String::from)
        };
        Ok(match data.get("status").and_then(Value::as_str) {
            Some("success") => SettlementLookup::Settled {
                transaction: text("transaction").unwrap_or_else(|| transaction.to_string()),
            },
            Some("failed") => SettlementLookup::Failed {
                reason: text("errorReason").unwrap_or_else(|| "settlement_failed".into()),
            },
            _ => SettlementLookup::Pending,
        })
    }

    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        let body = self.body(request, None)?;
        let path = format!("{}/verify", self.prefix());
        self.call(reqwest::Method::POST, &path, Some(body), true)
            .await?
            .into_verify_response(single)
    }

    async fn settle(&self, request: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        let body = self.body(request, Some(request.sync_settle))?;
        let path = format!("{}/settle", self.prefix());
        // Never retried: a repeated settle could be a second settlement.
        let data = match self
            .call(reqwest::Method::POST, &path, Some(body), false)
            .await?
        {
            Unwrapped::Data(data) => single(data)?,
            Unwrapped::Refusal { reason, message } => {
                let response = SettleResponse {
                    extra: None,
                    success: false,
                    error_reason: Some(reason),
                    error_message: Some(message),
                    payer: None,
                    transaction: String::new(),
                    network: request.network().to_string(),
                    status: None,
                    amount: None,
                };
                return Ok(settled(response, Finality::Confirmed));
            }
        };
        let response = self.settle_response(&data, request)?;
        let raw = match self.api {
            OkxApi::V2 => data,
            OkxApi::Legacy => serde_json::to_value(&response).unwrap_or(Value::Null),
        };
        let status = response.status.clone().unwrap_or_default();
        if !response.success || status == "failed" {
            let mut response = response;
            response.success = false;
            if response.error_reason.is_none() {
                response.error_reason = Some("settlement_failed".into());
            }
            return Ok(settled(response, Finality::Confirmed));
        }
        let state = match status.as_str() {
            "timeout" => return self.poll(response).await,
            "pending" => Finality::Pending,
            _ if request.scheme() == AGGR_DEFERRED => Finality::Batched,
            _ if response.transaction.is_empty() => Finality::Pending,
            _ => Finality::Confirmed,
        };
        Ok(Settlement {
            response,
            raw,
            status: state,
        })
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let path = format!("{}/supported", self.prefix());
        let data = match self.call(reqwest::Method::GET, &path, None, true).await? {
            Unwrapped::Data(data) => data,
            Unwrapped::Refusal { message, .. } => return Err(FacilitatorError::Garbage(message)),
        };
        match self.api {
            OkxApi::V2 => serde_json::from_value(data)
                .map_err(|e| FacilitatorError::Garbage(format!("supported answer: {e}"))),
            OkxApi::Legacy => legacy_supported(&data),
        }
    }
}

/// Legacy `/supported`: `[{x402Version, scheme, chainIndex, chainName}]`, networks as chain ids.
fn legacy_supported(data: &Value) -> Result<SupportedResponse, FacilitatorError> {
    let items = match data {
        Value::Array(items) => items.as_slice(),
        other => std::slice::from_ref(other),
    };
    let kinds = items
        .iter()
        .filter_map(|k| {
            let chain = k.get("chainIndex").and_then(|c| match c {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })?;
            Some(SupportedKind {
                x402_version: k.get("x402Version").and_then(Value::as_u64).unwrap_or(1) as u8,
                scheme: k.get("scheme").and_then(Value::as_str)?.to_string(),
                network: format!("eip155:{chain}"),
                extra: None,
            })
        })
        .collect::<Vec<_>>();
    if kinds.is_empty() {
        return Err(FacilitatorError::Garbage(
            "legacy supported answer lists no chain".into(),
        ));
    }
    Ok(SupportedResponse { kinds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_published_hmac_vectors() {
        let ts = "2026-03-30T10:00:00.000Z";
        assert_eq!(
            okx_signature(
                "test-secret",
                ts,
                "POST",
                "/api/v6/pay/x402/verify",
                r#"{"x402Version":2}"#
            ),
            "IU7Xnpn/mkL/qzwrNQxP8V28HRrHvREgguTaXzTA0gs="
        );
        assert_eq!(
            okx_signature("test-secret", ts, "GET", "/api/v6/pay/x402/supported", ""),
            "Hr+qBBgQri/XKOSuwZipWZ/ZlQtBJFDpk5lC2w2QqKA="
        );
        assert_eq!(
            okx_signature(
                "test-secret",
                ts,
                "GET",
                "/api/v6/pay/x402/settle/status?txHash=0xabc123",
                ""
            ),
            "x56mgfv+mTslQOXdfkkbpUOag+dpPtoBGwc+rdWfuHw="
        );
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds_and_z() {
        let at = UNIX_EPOCH + Duration::from_millis(1_774_864_800_000);
        assert_eq!(okx_timestamp(at), "2026-03-30T10:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_millis(951_782_400_007);
        assert_eq!(okx_timestamp(leap), "2000-02-29T00:00:00.007Z");
        assert_eq!(okx_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn envelope_code_may_be_a_string_or_a_number_and_data_an_object_or_an_array() {
        let object =
            unwrap_envelope(200, br#"{"code":"0","msg":"","data":{"isValid":true}}"#).unwrap();
        assert_eq!(object, Unwrapped::Data(json!({"isValid": true})));
        let Unwrapped::Data(array) =
            unwrap_envelope(200, br#"{"code":0,"data":[{"success":true}],"msg":""}"#).unwrap()
        else {
            panic!("data expected")
        };
        assert_eq!(single(array).unwrap(), json!({"success": true}));
        let bare = unwrap_envelope(200, br#"{"isValid":false}"#).unwrap();
        assert_eq!(bare, Unwrapped::Data(json!({"isValid": false})));
    }

    #[test]
    fn envelope_errors_are_classified_by_code_even_inside_http_200() {
        let e = unwrap_envelope(200, br#"{"code":"50113","msg":"Invalid Sign","data":null}"#);
        assert!(matches!(e, Err(FacilitatorError::Credentials(m)) if m.contains("50113")));
        let e = unwrap_envelope(401, br#"{"code":50105,"msg":"passphrase incorrect"}"#);
        assert!(matches!(e, Err(FacilitatorError::Credentials(_))));
        let e = unwrap_envelope(200, br#"{"code":"50011","msg":"Too Many Requests"}"#);
        assert!(matches!(e, Err(FacilitatorError::RateLimited(_))));
        let e = unwrap_envelope(429, b"");
        assert!(matches!(e, Err(FacilitatorError::RateLimited(_))));
        let refusal = unwrap_envelope(
            200,
            br#"{"code":"30001","msg":"invalid signature, nonce_used","data":null}"#,
        )
        .unwrap();
        assert!(matches!(refusal, Unwrapped::Refusal { ref reason, .. } if reason == "nonce_used"));
        let e = unwrap_envelope(200, br#"{"code":"50026","msg":"system error","data":null}"#);
        assert!(matches!(e, Err(FacilitatorError::Status { .. })));
        assert!(matches!(
            unwrap_envelope(200, b"<html>"),
            Err(FacilitatorError::Garbage(_))
        ));
        assert!(matches!(
            unwrap_envelope(200, br#"{"code":"0","data":null}"#),
            Err(FacilitatorError::Garbage(_))
        ));
        assert!(matches!(
            unwrap_envelope(502, b"bad gateway"),
            Err(FacilitatorError::Status { status: 502, .. })
        ));
    }
}
