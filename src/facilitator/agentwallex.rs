//! `kind = "agentwallex"`: AgentWallex's x402 v2 facilitator.
//!
//! Standard x402 v2 bodies under `/x402/facilitator/*`, authenticated by `X-API-Key`. Answers may
//! be plain objects or wrapped in `{code, msg, data}`; errors follow `{code, type, message}`.
//! AgentWallex settles in batches, so a settle answer without a transaction hash is a success
//! whose settlement is pending. Fees are published at `/x402/fees/tiers`.

use super::transport::{excerpt, Backoff, Caller, Transport, Unwrapped};
use super::{Facilitator, FacilitatorError, FacilitatorRequest, Settlement};
use crate::config::{FacilitatorConfig, Secret};
use crate::payment::Finality;
use crate::pricing::FeeTier;
use crate::x402::{SettleResponse, SupportedKind, SupportedResponse, VerifyResponse};
use async_trait::async_trait;
use serde_json::Value;
use std::time::Duration;

/// Rate-limited verify/supported calls: two more attempts, waiting what `Retry-After` asks (1 s
/// when it says nothing) but never more than 3 s.
const BACKOFF: Backoff = Backoff {
    retries: 2,
    first: Duration::from_secs(1),
    max: Duration::from_secs(3),
    doubling: false,
};

/// `invalid_request_error` codes that are a reason to refuse the payment (402), not a fault of
/// the gateway.
const PAYMENT_CODES: &[&str] = &[
    "insufficient_funds",
    "session_expired",
    "invalid_chain",
    "invalid_token",
    "invalid_address",
    "policy_violation",
    "agent_frozen",
    "approval_timeout",
    "invalid_signature",
    "nonce_used",
    "expired",
];

/// Reads an answer: the error contract, a `{code, msg, data}` wrapper, or a plain object.
fn interpret(status: u16, body: &[u8]) -> Result<Unwrapped, FacilitatorError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let obj = json.as_ref().and_then(Value::as_object);
    let text = |key: &str| {
        obj.and_then(|o| o.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let kind = text("type");
    let code = text("code");
    let message = text("message");
    if status == 429 || kind == "rate_limit_error" {
        return Err(FacilitatorError::RateLimited(format!(
            "{kind} {code}: {message}"
        )));
    }
    if matches!(status, 401 | 403)
        || kind == "authentication_error"
        || kind == "authorization_error"
    {
        let why = if message.is_empty() {
            format!("HTTP {status}")
        } else {
            format!("{kind}: {message}")
        };
        return Err(FacilitatorError::Credentials(why));
    }
    if (kind == "invalid_request_error" || status == 400) && PAYMENT_CODES.contains(&code.as_str())
    {
        return Ok(Unwrapped::Refusal {
            reason: code,
            message: if message.is_empty() {
                "refused by AgentWallex".into()
            } else {
                message
            },
        });
    }
    if !(200..300).contains(&status) || !kind.is_empty() {
        let body = if kind.is_empty() {
            excerpt(body)
        } else {
            format!("{kind} {code}: {message}")
        };
        return Err(FacilitatorError::Status { status, body });
    }
    let Some(value) = json.clone().filter(Value::is_object) else {
        return Err(FacilitatorError::Garbage(format!(
            "HTTP {status} with body `{}`",
            excerpt(body)
        )));
    };
    // A wrapper `{code: 0, msg, data}` around the answer.
    let wrapped_ok = match value.get("code") {
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0",
        _ => false,
    };
    if let (true, Some(data)) = (wrapped_ok, value.get("data")) {
        return match data {
            Value::Object(_) => Ok(Unwrapped::Data(data.clone())),
            _ => Err(FacilitatorError::Garbage(format!(
                "wrapped data is `{data}`"
            ))),
        };
    }
    if value.get("code").is_some() && value.get("data").is_some() {
        return Err(FacilitatorError::Status {
            status,
            body: format!("code {}: {}", value["code"], text("msg")),
        });
    }
    Ok(Unwrapped::Data(value))
}

pub struct AgentWallexFacilitator {
    name: String,
    transport: Transport,
    base: String,
    api_key: Secret,
}

impl AgentWallexFacilitator {
    pub fn new(config: &FacilitatorConfig) -> Result<Self, FacilitatorError> {
        let settings = config.agentwallex.as_ref().ok_or_else(|| {
            FacilitatorError::Credentials("kind \"agentwallex\" without api_key".into())
        })?;
        Ok(Self {
            name: config.name.clone(),
            transport: Transport::new(config.timeout)?,
            base: config
                .url
                .clone()
                .unwrap_or_else(|| crate::config::AGENTWALLEX_URL.into()),
            api_key: settings.api_key.clone(),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        retry: bool,
    ) -> Result<Unwrapped, FacilitatorError> {
        let api_key = [self.api_key.expose()];
        let caller = Caller {
            name: &self.name,
            secrets: &api_key,
            credentials_hint:
                "AgentWallex refused the gateway's API key: check api_key and environment",
        };
        let build = || {
            let request = self
                .transport
                .client
                .request(method.clone(), format!("{}{path}", self.base))
                .header("X-API-Key", self.api_key.expose())
                .header("Content-Type", "application/json");
            match &body {
                Some(text) => request.body(text.clone()),
                None => request,
            }
        };
        self.transport
            .call(&caller, retry.then_some(BACKOFF), build, |answer| {
                interpret(answer.status, &answer.body)
            })
            .await
    }

    fn body(request: &FacilitatorRequest) -> Result<String, FacilitatorError> {
        serde_json::to_string(request).map_err(|e| FacilitatorError::Garbage(e.to_string()))
    }

    /// The published fee schedule.
    pub async fn fee_tiers(&self) -> Result<Vec<FeeTier>, FacilitatorError> {
        let data = match self
            .call(reqwest::Method::GET, "/x402/fees/tiers", None, true)
            .await?
        {
            Unwrapped::Data(data) => data,
            Unwrapped::Refusal { message, .. } => return Err(FacilitatorError::Garbage(message)),
        };
        let tiers = data
            .get("tiers")
            .and_then(Value::as_array)
            .ok_or_else(|| FacilitatorError::Garbage("fee answer has no `tiers`".into()))?;
        let amount = |t: &Value, key: &str| match t.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        tiers
            .iter()
            .map(|t| {
                Some(FeeTier {
                    min: amount(t, "min_amount")?,
                    max: amount(t, "max_amount").filter(|m| !m.trim().is_empty()),
                    percentage: amount(t, "percentage")?,
                })
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                FacilitatorError::Garbage("a fee tier lacks min_amount or percentage".into())
            })
    }
}

#[async_trait]
impl Facilitator for AgentWallexFacilitator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        let body = Self::body(request)?;
        self.call(
            reqwest::Method::POST,
            "/x402/facilitator/verify",
            Some(body),
            true,
        )
        .await?
        .into_verify_response(Ok)
    }

    async fn settle(&self, request: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        let body = Self::body(request)?;
        // Never retried: a repeated settle could be a second settlement.
        let mut raw = match self
            .call(
                reqwest::Method::POST,
                "/x402/facilitator/settle",
                Some(body),
                false,
            )
            .await?
        {
            Unwrapped::Data(data) => data,
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
                let raw = serde_json::to_value(&response).unwrap_or(Value::Null);
                return Ok(Settlement {
                    response,
                    raw,
                    status: Finality::Confirmed,
                });
            }
        };
        let mut response: SettleResponse = serde_json::from_value(raw.clone())
            .map_err(|e| FacilitatorError::Garbage(format!("settle answer: {e}")))?;
        if response.network.is_empty() {
            response.network = request.network().to_string();
        }
        let status = super::finality_of(&response);
        // Batched settlement: tell the buyer the payment is accepted but not yet on chain.
        if response.success && status == Finality::Pending && response.status.is_none() {
            response.status = Some("pending".into());
            if let Some(obj) = raw.as_object_mut() {
                obj.insert("status".into(), "pending".into());
            }
        }
        if let Some(obj) = raw.as_object_mut() {
            obj.entry("network")
                .or_insert_with(|| request.network().into());
        }
        Ok(Settlement {
            response,
            raw,
            status,
        })
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let data = match self
            .call(
                reqwest::Method::GET,
                "/x402/facilitator/supported",
                None,
                true,
            )
            .await?
        {
            Unwrapped::Data(data) => data,
            Unwrapped::Refusal { message, .. } => return Err(FacilitatorError::Garbage(message)),
        };
        if data.get("kinds").is_some() {
            return serde_json::from_value(data)
                .map_err(|e| FacilitatorError::Garbage(format!("supported answer: {e}")));
        }
        // A bare list of chains: `exact` is what AgentWallex documents.
        let chains = ["chains", "networks"]
            .iter()
            .find_map(|k| data.get(*k).and_then(Value::as_array))
            .ok_or_else(|| FacilitatorError::Garbage("supported answer lists no kinds".into()))?;
        let kinds = chains
            .iter()
            .filter_map(|c| {
                c.as_str()
                    .or_else(|| c.get("network").and_then(Value::as_str))
            })
            .map(|network| SupportedKind {
                x402_version: 2,
                scheme: "exact".into(),
                network: network.to_string(),
                extra: None,
            })
            .collect();
        Ok(SupportedResponse { kinds })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plain_and_wrapped_answers_are_both_read() {
        assert_eq!(
            interpret(200, br#"{"isValid":true}"#).unwrap(),
            Unwrapped::Data(json!({"isValid": true}))
        );
        assert_eq!(
            interpret(200, br#"{"code":0,"msg":"ok","data":{"isValid":true}}"#).unwrap(),
            Unwrapped::Data(json!({"isValid": true}))
        );
    }

    #[test]
    fn the_error_contract_is_mapped_by_type_and_code() {
        let auth = interpret(
            401,
            br#"{"code":"invalid_api_key","type":"authentication_error","message":"bad key"}"#,
        );
        assert!(matches!(auth, Err(FacilitatorError::Credentials(_))));
        let limited = interpret(
            429,
            br#"{"code":"rate_limit_exceeded","type":"rate_limit_error","message":"slow"}"#,
        );
        assert!(matches!(limited, Err(FacilitatorError::RateLimited(_))));
        let refusal = interpret(
            400,
            br#"{"code":"insufficient_funds","type":"invalid_request_error","message":"no money"}"#,
        )
        .unwrap();
        assert_eq!(
            refusal,
            Unwrapped::Refusal {
                reason: "insufficient_funds".into(),
                message: "no money".into()
            }
        );
        let other = interpret(
            400,
            br#"{"code":"invalid_request","type":"invalid_request_error","message":"?"}"#,
        );
        assert!(matches!(
            other,
            Err(FacilitatorError::Status { status: 400, .. })
        ));
        let internal = interpret(
            500,
            br#"{"code":"internal","type":"internal_error","message":"x"}"#,
        );
        assert!(matches!(
            internal,
            Err(FacilitatorError::Status { status: 500, .. })
        ));
        assert!(matches!(
            interpret(200, b"nope"),
            Err(FacilitatorError::Garbage(_))
        ));
    }
}
