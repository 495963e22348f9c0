//! HTTP plumbing shared by the facilitator clients: bounded bodies, errors without URLs.

use super::FacilitatorError;
use crate::x402::VerifyResponse;
use serde_json::Value;
use std::time::Duration;

/// A vendor's answer once its envelope is removed.
#[derive(Debug, PartialEq)]
pub(super) enum Unwrapped {
    Data(Value),
    /// A business error that is a reason to refuse the payment (402), not a gateway problem.
    Refusal {
        reason: String,
        message: String,
    },
}

impl Unwrapped {
    /// A `/verify` answer: the data (after `select`) read as a verify response, or the refusal
    /// as `isValid: false` with its reason.
    pub fn into_verify_response(
        self,
        select: impl FnOnce(Value) -> Result<Value, FacilitatorError>,
    ) -> Result<VerifyResponse, FacilitatorError> {
        match self {
            Self::Data(data) => serde_json::from_value(select(data)?)
                .map_err(|e| FacilitatorError::Garbage(format!("verify answer: {e}"))),
            Self::Refusal { reason, message } => Ok(VerifyResponse {
                extra: None,
                is_valid: false,
                invalid_reason: Some(reason),
                invalid_message: Some(message),
                payer: None,
            }),
        }
    }
}

/// Facilitator bodies are small; a larger answer is treated as garbage rather than buffered.
pub(super) const MAX_BODY: usize = 256 * 1024;

/// A facilitator's answer before any interpretation.
pub(super) struct Answer {
    pub status: u16,
    /// `Retry-After` in seconds, when the facilitator sent one.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
    /// The `EXTENSION-RESPONSES` header: the facilitator's word on the payment's extensions.
    pub extension_responses: Option<Vec<u8>>,
}

pub(super) struct Transport {
    pub client: reqwest::Client,
    timeout: Duration,
}

impl Transport {
    pub fn new(timeout: Duration) -> Result<Self, FacilitatorError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("x402-gateway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FacilitatorError::Unreachable(e.to_string()))?;
        Ok(Self { client, timeout })
    }

    pub fn classify(&self, e: reqwest::Error) -> FacilitatorError {
        if e.is_timeout() {
            FacilitatorError::Timeout(self.timeout)
        } else if e.is_connect() {
            FacilitatorError::Unreachable(without_url(&e))
        } else {
            FacilitatorError::Garbage(without_url(&e))
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, FacilitatorError> {
        let mut response = request.send().await.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let extension_responses = response
            .headers()
            .get(super::extension_responses::EXTENSION_RESPONSES)
            .map(|v| v.as_bytes().to_vec());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(FacilitatorError::Garbage(format!(
                    "answer larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            retry_after,
            body,
            extension_responses,
        })
    }
}

/// How rate-limited calls are retried: `retries` more attempts, waiting what `Retry-After` asks or
/// `first` (doubled per attempt when `doubling`), never more than `max`, so a buyer is not held
/// for long. `/settle` is never retried: a repeated settle could be a second settlement.
#[derive(Debug, Clone, Copy)]
pub(super) struct Backoff {
    pub retries: u32,
    pub first: Duration,
    pub max: Duration,
    pub doubling: bool,
}

impl Backoff {
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let own = if self.doubling {
            self.first.saturating_mul(2u32.saturating_pow(attempt))
        } else {
            self.first
        };
        retry_after.unwrap_or(own).min(self.max)
    }
}

/// Who is calling, for logs and redaction.
pub(super) struct Caller<'a> {
    pub name: &'a str,
    /// Credentials that must never appear in an error text.
    pub secrets: &'a [&'a str],
    /// What the operator should check when the credentials are refused.
    pub credentials_hint: &'a str,
}

impl Transport {
    /// The one request loop of every facilitator client: builds the request afresh per attempt
    /// (signatures carry a timestamp), reads the answer with `read`, retries rate limits under
    /// `backoff`, and keeps credentials out of every error text.
    pub async fn call<T>(
        &self,
        caller: &Caller<'_>,
        backoff: Option<Backoff>,
        build: impl Fn() -> reqwest::RequestBuilder,
        read: impl Fn(&Answer) -> Result<T, FacilitatorError>,
    ) -> Result<T, FacilitatorError> {
        let mut attempt = 0;
        loop {
            let answer = self.send(build()).await?;
            match read(&answer) {
                Err(FacilitatorError::RateLimited(why))
                    if backoff.is_some_and(|b| attempt < b.retries) =>
                {
                    let wait =
                        backoff.map_or(Duration::ZERO, |b| b.wait(attempt, answer.retry_after));
                    tracing::debug!(facilitator = %caller.name, %why, ?wait, "rate limited; retrying");
                    attempt += 1;
                    tokio::time::sleep(wait).await;
                }
                Err(FacilitatorError::Credentials(why)) => {
                    let why = redact(&why, caller.secrets);
                    tracing::error!(
                        facilitator = %caller.name,
                        cause = %why,
                        "{}", caller.credentials_hint
                    );
                    return Err(FacilitatorError::Credentials(why));
                }
                Err(FacilitatorError::Status { status, body }) => {
                    return Err(FacilitatorError::Status {
                        status,
                        body: redact(&body, caller.secrets),
                    })
                }
                Err(FacilitatorError::Garbage(why)) => {
                    return Err(FacilitatorError::Garbage(redact(&why, caller.secrets)))
                }
                other => return other,
            }
        }
    }
}

/// reqwest errors print the URL; facilitator URLs may carry credentials, so only the cause is kept.
pub(super) fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<facilitator>");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(super) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut short: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        short.push('…');
    }
    short
}

/// `text` with every occurrence of a credential replaced, for messages built from a facilitator's
/// answer (which might echo what it was sent).
pub(super) fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(secret, "***");
    }
    out
}
