//! The standard x402 facilitator HTTP API: `POST /verify`, `POST /settle`, `GET /supported`.

use super::extension_responses::{header_reports, log as log_reports, take_from_answer};
use super::transport::{excerpt, redact, Caller, Transport};
use super::{Facilitator, FacilitatorError, FacilitatorRequest, Settlement};
use crate::config::FacilitatorConfig;
use crate::x402::{SettleResponse, SupportedResponse, VerifyResponse};
use async_trait::async_trait;
use serde::de::DeserializeOwned;

/// The standard facilitator's answer when its wait for the receipt timed out (HTTP 500).
const SETTLEMENT_PENDING: &str = "settlement_pending";

pub struct HttpFacilitator {
    name: String,
    transport: Transport,
    base: String,
    bearer: Option<String>,
    timeout: std::time::Duration,
}

impl HttpFacilitator {
    pub fn new(config: &FacilitatorConfig) -> Result<Self, FacilitatorError> {
        Ok(Self {
            name: config.name.clone(),
            transport: Transport::new(config.timeout)?,
            base: config.url.clone().unwrap_or_default(),
            bearer: config.bearer_token.as_ref().map(|s| s.expose().to_string()),
            timeout: config.timeout,
        })
    }

    /// One call, its answer read by `read`; the bearer token never appears in an error. `op`
    /// names the call in the log of the facilitator's extension reports.
    async fn call<T>(
        &self,
        op: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
        read: impl Fn(u16, &[u8]) -> Result<T, FacilitatorError>,
    ) -> Result<T, FacilitatorError> {
        let token = [self.bearer.as_deref().unwrap_or_default()];
        let caller = Caller {
            name: &self.name,
            secrets: &token,
            credentials_hint: "the facilitator refused the gateway's bearer token",
        };
        let build = || match &self.bearer {
            Some(token) => build().bearer_auth(token),
            None => build(),
        };
        self.transport
            .call(&caller, None, build, |answer| {
                if let Some(header) = &answer.extension_responses {
                    log_reports(&self.name, op, &header_reports(header));
                }
                read(answer.status, &answer.body)
            })
            .await
    }

    async fn post_settle(&self, body: &[u8]) -> Result<(u16, Vec<u8>), FacilitatorError> {
        let build = || {
            self.transport
                .client
                .post(format!("{}/settle", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec())
        };
        self.call("settle", build, |status, body| Ok((status, body.to_vec())))
            .await
    }

    /// `e` without the bearer token, for errors built outside [`Self::call`].
    fn redacted(&self, e: FacilitatorError) -> FacilitatorError {
        let token = [self.bearer.as_deref().unwrap_or_default()];
        match e {
            FacilitatorError::Status { status, body } => FacilitatorError::Status {
                status,
                body: redact(&body, &token),
            },
            FacilitatorError::Garbage(why) => FacilitatorError::Garbage(redact(&why, &token)),
            other => other,
        }
    }

    /// 2xx must be a `T`; other statuses are still a `T` when the body is one (facilitators answer
    /// refusals with 400 and a verify/settle body), otherwise an error carrying the status.
    fn parse<T: DeserializeOwned>(
        status: u16,
        body: &[u8],
        marker: &str,
    ) -> Result<(T, serde_json::Value), FacilitatorError> {
        let json: Result<serde_json::Value, _> = serde_json::from_slice(body);
        // A 5xx is never a success, whatever its body says.
        let claims_success =
            |v: &serde_json::Value| v.get(marker) == Some(&serde_json::Value::Bool(true));
        match json {
            Ok(value) if status >= 500 && claims_success(&value) => Err(FacilitatorError::Status {
                status,
                body: excerpt(body),
            }),
            Ok(value) if (200..300).contains(&status) || value.get(marker).is_some() => {
                let typed =
                    T::deserialize(&value).map_err(|e| FacilitatorError::Garbage(e.to_string()))?;
                Ok((typed, value))
            }
            Ok(_) | Err(_) if !(200..300).contains(&status) => Err(FacilitatorError::Status {
                status,
                body: excerpt(body),
            }),
            Ok(_) | Err(_) => Err(FacilitatorError::Garbage(format!(
                "HTTP {status} with body `{}`",
                excerpt(body)
            ))),
        }
    }
}

#[async_trait]
impl Facilitator for HttpFacilitator {
    fn name(&self) -> &str {
        &self.name
    }

    async fn verify(
        &self,
        request: &FacilitatorRequest,
    ) -> Result<VerifyResponse, FacilitatorError> {
        let build = || {
            self.transport
                .client
                .post(format!("{}/verify", self.base))
                .json(request)
        };
        self.call("verify", build, |status, body| {
            Self::parse::<VerifyResponse>(status, body, "isValid").map(|(v, mut raw)| {
                log_reports(&self.name, "verify", &take_from_answer(&mut raw));
                v
            })
        })
        .await
    }

    async fn settle(&self, request: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        // The identical bytes are resent once for `settlement_pending`: the facilitator then checks
        // the transaction it already broadcast instead of sending another.
        let sent =
            serde_json::to_vec(request).map_err(|e| FacilitatorError::Garbage(e.to_string()))?;
        let (mut status, mut body) = self.post_settle(&sent).await?;
        let mut parsed = Self::parse::<SettleResponse>(status, &body, "success");
        if let Ok((response, _)) = &parsed {
            if response.error_reason.as_deref() == Some(SETTLEMENT_PENDING) {
                tracing::info!(facilitator = %self.name, transaction = %response.transaction, "settlement pending; asking once more");
                let first = response.transaction.clone();
                // If the resend fails, the first answer (pending, naming its transaction) stands.
                match self.post_settle(&sent).await {
                    Ok(again) => {
                        (status, body) = again;
                        parsed = Self::parse::<SettleResponse>(status, &body, "success");
                    }
                    Err(e) => {
                        tracing::warn!(facilitator = %self.name, error = %e, "settlement resend failed")
                    }
                }
                if let Ok((again, raw)) = &mut parsed {
                    if again.transaction.is_empty() && !first.is_empty() {
                        again.transaction = first.clone();
                        if let Some(obj) = raw.as_object_mut() {
                            obj.insert("transaction".into(), first.into());
                        }
                    }
                }
            }
        }
        let (response, mut raw) = parsed.map_err(|e| self.redacted(e))?;
        // The buyer's receipt is made from `raw`: the facilitator's word on the extensions is the
        // seller's business only.
        log_reports(&self.name, "settle", &take_from_answer(&mut raw));
        if !response.success && response.error_reason.as_deref() == Some(SETTLEMENT_PENDING) {
            // Still pending after the resend: broadcast, receipt not seen in time. It may still
            // land, so it is not a refusal; reconciliation sends the identical request again.
            return Err(FacilitatorError::Unconfirmed {
                transaction: response.transaction,
                status: SETTLEMENT_PENDING.into(),
                deadline: self.timeout,
            });
        }
        // A 5xx answer settles nothing for sure: only `settlement_pending` keeps its transaction
        // (for the receipt); any other is an error whose outcome is unknown.
        if status >= 500 && response.error_reason.as_deref() != Some(SETTLEMENT_PENDING) {
            return Err(self.redacted(FacilitatorError::Status {
                status,
                body: excerpt(&body),
            }));
        }
        let status = super::finality_of(&response);
        Ok(Settlement {
            response,
            raw,
            status,
        })
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let build = || {
            self.transport
                .client
                .get(format!("{}/supported", self.base))
        };
        self.call("supported", build, |status, body| {
            Self::parse::<SupportedResponse>(status, body, "kinds").map(|(v, _)| v)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_with_a_body_are_answers_and_other_failures_are_errors() {
        let (v, _) = HttpFacilitator::parse::<VerifyResponse>(
            400,
            br#"{"isValid":false,"invalidReason":"x"}"#,
            "isValid",
        )
        .unwrap();
        assert_eq!(v.invalid_reason.as_deref(), Some("x"));
        assert!(matches!(
            HttpFacilitator::parse::<VerifyResponse>(500, br#"{"error":"boom"}"#, "isValid"),
            Err(FacilitatorError::Status { status: 500, .. })
        ));
        assert!(
            matches!(
                HttpFacilitator::parse::<VerifyResponse>(500, br#"{"isValid":true}"#, "isValid"),
                Err(FacilitatorError::Status { status: 500, .. })
            ),
            "a 5xx is never a success"
        );
        assert!(matches!(
            HttpFacilitator::parse::<VerifyResponse>(200, b"not json{", "isValid"),
            Err(FacilitatorError::Garbage(_))
        ));
        assert!(matches!(
            HttpFacilitator::parse::<VerifyResponse>(200, br#"{"hello":1}"#, "isValid"),
            Err(FacilitatorError::Garbage(_))
        ));
    }
}
