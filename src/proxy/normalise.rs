//! Pingora glue of request normalisation; the decision itself is [`crate::pricing::normalise`].

use super::{GatewayState, Reply};
use crate::pricing::{
    body_could_reprice, body_encoding, body_method_override, headers_to_drop, normalise,
    reprice_by_body, PricedAs, MAX_BODY_BYTES,
};
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::time::Duration;

/// How long the gateway waits for a body it must read before pricing the request.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How `req` is priced, or the `400` that refuses it.
pub(super) fn priced_as(req: &RequestHeader, state: &GatewayState) -> Result<PricedAs, Reply> {
    let headers = req.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let config = &state.config;
    normalise(
        req.method.as_str(),
        req.raw_path(),
        headers,
        &config.routes,
        &config.server.requests,
    )
    .map_err(|refusal| Reply::error(400, refusal.code(), &refusal.to_string()))
}

/// `priced`, or the price a `_method` field in the body gives it: upstreams such as Rails and
/// Laravel route a POST by that field. The body is read (bounded) only when that could change the
/// price, and Pingora's retry buffer hands it on to the upstream unchanged.
pub(super) async fn priced_by_body(
    session: &mut Session,
    priced: PricedAs,
    state: &GatewayState,
) -> Result<PricedAs, Reply> {
    if !body_could_reprice(&session.req_header().method, &priced, &state.config.routes) {
        return Ok(priced);
    }
    // Boxed: few requests read their body here, and inline this future would enlarge every
    // request's phase future, which Pingora moves whole into a box.
    Box::pin(reprice_from_body(session, priced, state)).await
}

/// [`priced_by_body`] once the body can change the price: reads it (bounded) and reprices.
async fn reprice_from_body(
    session: &mut Session,
    priced: PricedAs,
    state: &GatewayState,
) -> Result<PricedAs, Reply> {
    let routes = &state.config.routes;
    let content_type = session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes());
    let Some(encoding) = body_encoding(content_type) else {
        return Ok(priced);
    };
    let too_large = || {
        Reply::error(
            413,
            "body_too_large_to_price",
            &format!(
                "a POST body on this path can change its price (a `_method` field) and is read \
                 before the request is priced: at most {MAX_BODY_BYTES} bytes"
            ),
        )
    };
    let body = match read_body(session, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => return Err(too_large()),
        Err(BodyError::Unreadable) => {
            return Err(Reply::error(
                400,
                "unreadable_body",
                "the request body could not be read before pricing the request",
            ))
        }
    };
    let method = body_method_override(&encoding, &body)
        .map_err(|refusal| Reply::error(400, refusal.code(), &refusal.to_string()))?;
    Ok(reprice_by_body(priced, method.as_deref(), routes))
}

/// Why a body the gateway must read before deciding could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyError {
    /// More than the limit (declared or sent).
    TooLarge,
    /// The client stopped, sent a broken framing or took longer than [`BODY_READ_TIMEOUT`].
    Unreadable,
}

/// Reads the whole request body, at most `limit` bytes (no more than Pingora's retry buffer,
/// which hands the body on to the upstream unchanged when the request is proxied).
pub(super) async fn read_body(session: &mut Session, limit: usize) -> Result<Vec<u8>, BodyError> {
    // Read already (by the `_method` check): what was read is in the retry buffer.
    if session.as_mut().is_body_done() {
        if let Some(read) = session.as_ref().get_retry_buffer() {
            return Ok(read.to_vec());
        }
    }
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(BodyError::TooLarge);
    }
    // A client that sent `Expect: 100-continue` waits for it before sending the body the gateway
    // now reads (the upstream, which would send it on the proxied path, has not been asked yet).
    if expects_continue(session.req_header())
        && session.as_mut().write_continue_response().await.is_err()
    {
        return Err(BodyError::Unreadable);
    }
    session.enable_retry_buffering();
    let mut body = Vec::new();
    let read_all = async {
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() > limit {
                return Ok(false);
            }
        }
        Ok::<bool, Box<pingora::Error>>(true)
    };
    match tokio::time::timeout(BODY_READ_TIMEOUT, read_all).await {
        Ok(Ok(true)) => Ok(body),
        Ok(Ok(false)) => Err(BodyError::TooLarge),
        Ok(Err(_)) | Err(_) => Err(BodyError::Unreadable),
    }
}

/// Whether the request asks for `100 Continue` before it sends its body.
fn expects_continue(request: &RequestHeader) -> bool {
    request.version == http::Version::HTTP_11
        && request
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Removes the headers the upstream must not see (overrides, URL rewrites, underscore aliases).
pub(super) fn strip_headers(upstream_request: &mut RequestHeader, state: &GatewayState) {
    let headers = upstream_request
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    for name in headers_to_drop(headers, &state.config.server.requests) {
        upstream_request.remove_header(name.as_str());
    }
}
