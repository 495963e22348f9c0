//! The standard x402 facilitator HTTP API: `POST /verify`, `POST /settle`, `GET /supported`.

use super::transport::{excerpt, without_url, MAX_BODY};
use super::{Facilitator, FacilitatorError, FacilitatorRequest, Settlement, SettlementStatus};
use crate::config::FacilitatorConfig;
use crate::x402::{SettleResponse, SupportedResponse, VerifyResponse};
use async_trait::async_trait;
use serde::de::DeserializeOwned;
use std::time::Duration;

/// The `errorReason` of a settlement broadcast but not confirmed yet.
const SETTLEMENT_PENDING: &str = "settlement_pending";

pub struct HttpFacilitator {
    name: String,
    client: reqwest::Client,
    base: String,
    bearer: Option<String>,
    timeout: Duration,
}

impl HttpFacilitator {
    pub fn new(config: &FacilitatorConfig) -> Result<Self, FacilitatorError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("x402-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FacilitatorError::Unreachable(e.to_string()))?;
        Ok(Self {
            name: config.name.clone(),
            client,
            base: config.url.clone().unwrap_or_default(),
            bearer: config.bearer_token.as_ref().map(|s| s.expose().to_string()),
            timeout: config.timeout,
        })
    }

    fn classify(&self, e: reqwest::Error) -> FacilitatorError {
        if e.is_timeout() {
            FacilitatorError::Timeout(self.timeout)
        } else if e.is_connect() {
            FacilitatorError::Unreachable(without_url(&e))
        } else {
            FacilitatorError::Garbage(without_url(&e))
        }
    }

    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Vec<u8>), FacilitatorError> {
        let request = match &self.bearer {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let mut response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FacilitatorError::Garbage(format!(
                    "answer larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// 2xx must be a `T`; other statuses are still a `T` when the body is one (facilitators answer
    /// refusals with 400 and a verify/settle body), otherwise an error carrying the status.
    fn parse<T: DeserializeOwned>(
        status: u16,
        body: &[u8],
        marker: &str,
    ) -> Result<(T, serde_json::Value), FacilitatorError> {
        let json: Result<serde_json::Value, _> = serde_json::from_slice(body);
        match json {
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
        let (status, body) = self
            .call(
                self.client
                    .post(format!("{}/verify", self.base))
                    .json(request),
            )
            .await?;
        Self::parse::<VerifyResponse>(status, &body, "isValid").map(|(v, _)| v)
    }

    async fn settle(&self, request: &FacilitatorRequest) -> Result<Settlement, FacilitatorError> {
        let (status, body) = self
            .call(
                self.client
                    .post(format!("{}/settle", self.base))
                    .json(request),
            )
            .await?;
        let (response, raw) = Self::parse::<SettleResponse>(status, &body, "success")?;
        if !response.success && response.error_reason.as_deref() == Some(SETTLEMENT_PENDING) {
            // Broadcast, receipt not seen in time (x402 facilitators answer it with HTTP 500): it
            // may still land, so it is not a refusal. The identical request asks again later.
            return Err(FacilitatorError::Unconfirmed {
                transaction: response.transaction,
                status: SETTLEMENT_PENDING.into(),
                deadline: self.timeout,
            });
        }
        let status = SettlementStatus::of(&response);
        Ok(Settlement {
            response,
            raw,
            status,
        })
    }

    async fn supported(&self) -> Result<SupportedResponse, FacilitatorError> {
        let (status, body) = self
            .call(self.client.get(format!("{}/supported", self.base)))
            .await?;
        Self::parse::<SupportedResponse>(status, &body, "kinds").map(|(v, _)| v)
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
