//! Every response the gateway writes itself: 402 challenges, refusals, errors. One place decides
//! status, headers and JSON body, so clients see the same shape whatever went wrong.

use crate::payment::{Receipt, Refusal};
use crate::pricing::PricedRoute;
use crate::x402::EXPOSED_HEADERS;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// A response produced by the gateway instead of (or in place of) the upstream's.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// Empty when `extra_headers` carry the content type (a stored response).
    pub content_type: &'static str,
    /// Headers whose names are only known at run time, written last.
    pub extra_headers: Vec<(String, String)>,
    /// The refusal this reply renders, when it is one: other renderings (MCP) start from it
    /// rather than from the HTTP bytes.
    pub refusal: Option<Box<Refusal>>,
}

const JSON: &str = "application/json";
/// Seconds a client is asked to wait after a 503 of an unavailable dependency.
const RETRY_AFTER_SECS: u64 = 1;

impl Reply {
    /// A JSON error `{error, message}` without a challenge.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::from(Refusal::new(status, code, message))
    }

    /// 503 for a dependency that is down, with the pause before a retry may succeed.
    pub fn unavailable(code: &str, message: &str) -> Self {
        Self::from(Refusal::new(503, code, message).with_retry_after(RETRY_AFTER_SECS))
    }

    /// A challenge listing the route's options: the v2 header and a v1 body in one response.
    /// `error` is the machine code, `message` (when any) the human explanation.
    pub fn challenge(
        status: u16,
        route: &PricedRoute,
        resource_url: &str,
        method: &str,
        error: &str,
        message: Option<&str>,
    ) -> Self {
        let template = route.challenge();
        let required = route.v2_challenge(resource_url, method, error);
        let refusal =
            Refusal::new(status, error, message.unwrap_or(error)).with_challenge(required);
        let mut reply = Self::from(refusal);
        // The v1 form of the challenge, for clients that read the body.
        reply.body = Bytes::from(template.v1_json(resource_url, method, error, message));
        reply
    }

    /// The same challenge with one more extension (`extensions[key]`) in its v2 form.
    pub fn with_extension(mut self, key: &str, value: serde_json::Value) -> Self {
        let Some(mut refusal) = self.refusal.take() else {
            return self;
        };
        let extended = refusal
            .challenge
            .as_deref()
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok())
            .and_then(|mut json| {
                json.get_mut("extensions")?
                    .as_object_mut()?
                    .insert(key.to_string(), value);
                Some(json.to_string())
            });
        if let Some(challenge) = extended {
            refusal.challenge = Some(challenge);
        }
        // The headers carry the challenge: written again from the extended one.
        self.headers = refusal.http_headers();
        self.refusal = Some(refusal);
        self
    }

    /// The same challenge with `extra` merged into the `extra` of its `scheme` option on
    /// `network` (a `batch-settlement` corrective challenge's channel state).
    pub fn with_requirement_extra(
        mut self,
        scheme: &str,
        network: &str,
        extra: serde_json::Value,
    ) -> Self {
        let Some(mut refusal) = self.refusal.take() else {
            return self;
        };
        let (Some(challenge), serde_json::Value::Object(added)) =
            (refusal.challenge.as_deref(), extra)
        else {
            self.refusal = Some(refusal);
            return self;
        };
        let extended = serde_json::from_str::<serde_json::Value>(challenge)
            .ok()
            .and_then(|mut json| {
                let option = json
                    .get_mut("accepts")?
                    .as_array_mut()?
                    .iter_mut()
                    .find(|o| {
                        o.get("scheme").and_then(|v| v.as_str()) == Some(scheme)
                            && o.get("network").and_then(|v| v.as_str()) == Some(network)
                    })?;
                let target = option.get_mut("extra")?.as_object_mut()?;
                target.extend(added);
                Some(json.to_string())
            });
        if let Some(challenge) = extended {
            refusal.challenge = Some(challenge);
        }
        self.headers = refusal.http_headers();
        self.refusal = Some(refusal);
        self
    }

    /// The same challenge with a page for people in place of the v1 JSON body.
    pub fn with_html(mut self, page: Bytes) -> Self {
        self.body = page;
        self.content_type = "text/html; charset=utf-8";
        self
    }

    /// A JSON answer the gateway gives itself, not cached.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Cache-Control", "no-store".into())],
            body: Bytes::from(body.to_string()),
            content_type: JSON,
            extra_headers: Vec::new(),
            refusal: None,
        }
    }

    /// A JSON document the gateway serves itself (discovery).
    pub fn document(body: Bytes) -> Self {
        Self {
            status: 200,
            headers: vec![("Cache-Control", "public, max-age=60".into())],
            body,
            content_type: JSON,
            extra_headers: Vec::new(),
            refusal: None,
        }
    }

    /// A response kept from an earlier delivery, replayed as it was sent.
    pub fn stored(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::from(body),
            content_type: "",
            extra_headers: headers,
            refusal: None,
        }
    }

    /// Adds the settlement header of the receipt's protocol version.
    pub fn with_settlement(mut self, receipt: &Receipt) -> Self {
        self.headers
            .push((receipt.header_name(), receipt.encoded.clone()));
        if let Some(refusal) = self.refusal.as_mut() {
            refusal.receipt = Some(receipt.clone());
        }
        self
    }

    /// Writes the reply; the connection stays usable because the length is always declared.
    pub async fn write(&self, session: &mut Session) -> pingora::Result<()> {
        let mut header = ResponseHeader::build(self.status, Some(6))?;
        if !self.content_type.is_empty() {
            header.insert_header("Content-Type", self.content_type)?;
        }
        header.insert_header("Content-Length", self.body.len().to_string())?;
        header.insert_header("Cache-Control", "no-store")?;
        header.insert_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)?;
        for (name, value) in &self.headers {
            header.insert_header(*name, value.as_str())?;
        }
        for (name, value) in &self.extra_headers {
            header.insert_header(name.clone(), value.as_str())?;
        }
        let head_only = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head_only)
            .await?;
        if !head_only {
            session
                .write_response_body(Some(self.body.clone()), true)
                .await?;
        }
        Ok(())
    }
}

/// The HTTP form of a refusal: its status, its headers and the `{error, message}` body.
impl From<Refusal> for Reply {
    fn from(refusal: Refusal) -> Self {
        Self {
            status: refusal.status,
            headers: refusal.http_headers(),
            body: Bytes::from(refusal.http_json().to_string()),
            content_type: JSON,
            extra_headers: Vec::new(),
            refusal: Some(Box::new(refusal)),
        }
    }
}
