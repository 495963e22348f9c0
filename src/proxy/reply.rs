//! Every response the gateway writes itself: 402 challenges, refusals, errors. One place decides
//! status, headers and JSON body, so clients see the same shape whatever went wrong.

use crate::pricing::PricedRoute;
use crate::x402::{EXPOSED_HEADERS, PAYMENT_REQUIRED, PAYMENT_RESPONSE, X_PAYMENT_RESPONSE};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::json;

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
}

const JSON: &str = "application/json";
/// Seconds a client is asked to wait after a 503 of an unavailable dependency.
const RETRY_AFTER_SECS: u32 = 1;

impl Reply {
    /// A JSON error `{error, message}` without a challenge.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = json!({"error": code, "message": message});
        Self {
            status,
            headers: Vec::new(),
            body: Bytes::from(body.to_string()),
            content_type: JSON,
            extra_headers: Vec::new(),
        }
    }

    /// 503 for a dependency that is down, with the pause before a retry may succeed.
    pub fn unavailable(code: &str, message: &str) -> Self {
        let mut reply = Self::error(503, code, message);
        reply
            .headers
            .push(("Retry-After", RETRY_AFTER_SECS.to_string()));
        reply
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
        let required = template.v2_json(resource_url, error);
        let body = template.v1_json(resource_url, method, error, message);
        Self {
            status,
            headers: vec![(PAYMENT_REQUIRED, STANDARD.encode(required))],
            body: Bytes::from(body),
            content_type: JSON,
            extra_headers: Vec::new(),
        }
    }

    /// The same challenge with a page for people in place of the v1 JSON body.
    pub fn with_html(mut self, page: Bytes) -> Self {
        self.body = page;
        self.content_type = "text/html; charset=utf-8";
        self
    }

    /// A JSON document the gateway serves itself (discovery).
    pub fn document(body: Bytes) -> Self {
        Self {
            status: 200,
            headers: vec![("Cache-Control", "public, max-age=60".into())],
            body,
            content_type: JSON,
            extra_headers: Vec::new(),
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
        }
    }

    /// Adds the settlement header of the right protocol version.
    pub fn with_settlement(mut self, version: u8, encoded: String) -> Self {
        self.headers.push((settlement_header(version), encoded));
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

/// `PAYMENT-RESPONSE` for v2 payments, `X-PAYMENT-RESPONSE` for v1.
pub fn settlement_header(version: u8) -> &'static str {
    if version == 1 {
        X_PAYMENT_RESPONSE
    } else {
        PAYMENT_RESPONSE
    }
}
