//! Pingora glue of request normalisation; the decision itself is [`crate::pricing::normalise`].

use super::{GatewayState, Reply};
use crate::pricing::{headers_to_drop, normalise, PricedAs};
use pingora::http::RequestHeader;

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
