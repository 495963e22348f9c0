//! Request normalisation: the one (method, path) a request is priced as, decided before route
//! matching from the method, the raw request-target and the header names and values.
//!
//! The rule: if a common upstream framework could read a request as a priced resource, the
//! request is priced as that resource or refused. Concretely:
//! - the request-target must be origin-form (`/…`), absolute-form (`http(s)://host/…`) or
//!   `OPTIONS *`; anything else (`paid`, `./paid`, `%2fpaid`) is refused, because servers such as
//!   Werkzeug and Python's `http.server` route it as a path the gateway would not see;
//! - methods are case-sensitive (RFC 9110) and one that is not upper-case is refused, because
//!   Symfony and Django upper-case it before routing;
//! - a method override (`X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`, or a
//!   `_method` query parameter on POST) prices the request as the overriding method when that
//!   method is priced on the path; the override headers are removed before the upstream unless
//!   `method_override = "forward"`; a `_method` field in a POST body does the same, read by
//!   [`super::body_override`] when [`body_could_reprice`] says it matters;
//! - headers that name another URL (`X-Original-URL`, `X-Rewrite-URL`, …) are removed on every
//!   route, since IIS URL Rewrite and Symfony route by them;
//! - a header whose name, with `_` read as `-`, is one the gateway sets, strips or frames the
//!   request with is removed: CGI-style servers map `X_Payment_Payer` to `X-Payment-Payer`;
//! - path spellings are unified by [`canonical_path`].
//!
//! Nothing here performs I/O or knows the proxy: it is data in, decision out.

use std::borrow::Cow;

use super::path::canonical_path;
use super::routes::RouteTable;

/// Headers that ask an upstream to treat the request as another method.
const OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Headers that ask an upstream to route the request to another URL. Removed on every route: the
/// gateway is the only proxy in front of the upstream that may say where a request goes.
const URL_HEADERS: [&str; 10] = [
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-override-url",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-forwarded-prefix",
    "x-envoy-original-path",
    "x-script-name",
    "script-name",
];

/// Headers the gateway sets, replaces or frames the request with: an underscore spelling of one
/// of them is an alias a CGI-style upstream would read as the real header.
const GATEWAY_HEADERS: [&str; 6] = [
    "payment-signature",
    "x-payment",
    "host",
    "forwarded",
    "content-length",
    "transfer-encoding",
];
const GATEWAY_HEADER_PREFIXES: [&str; 2] = ["x-payment-", "x-forwarded-"];

/// What happens to method-override headers once the request is priced by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MethodOverride {
    /// Removed before the upstream: the upstream sees the method the client sent.
    #[default]
    Strip,
    /// Passed on, for upstreams that rely on them; the request is priced as the override.
    Forward,
}

impl MethodOverride {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "strip" => Ok(Self::Strip),
            "forward" => Ok(Self::Forward),
            other => Err(format!(
                "method_override = `{other}`: expected \"strip\" or \"forward\""
            )),
        }
    }
}

/// The operator's choices for request normalisation (`[server]` in `gateway.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestRules {
    pub method_override: MethodOverride,
    /// Remove every header with `_` in its name, as nginx does by default.
    pub drop_underscore_headers: bool,
}

/// How a request is priced, and what must not reach the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedAs {
    /// The method the request is priced as: the override when that is priced, else the request's.
    pub method: http::Method,
    /// The canonical path the request is matched on.
    pub path: String,
    /// Names (lower-case) of the request headers to remove before the upstream.
    pub drop_headers: Vec<String>,
}

/// Why a request is refused before pricing; each becomes a `400` with [`Refusal::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request-target must be a path starting with `/`, an absolute http(s) URL, or `*` for OPTIONS")]
    RequestTarget,
    #[error("the request-target is not valid UTF-8")]
    TargetEncoding,
    #[error("the path is percent-encoded more times than a path can be read unambiguously")]
    AmbiguousPath,
    #[error("method `{0}` is not an upper-case HTTP method (methods are case-sensitive)")]
    Method(String),
    #[error("method override `{0}` is not an HTTP method")]
    OverrideMethod(String),
    #[error("the request asks for more than one method override ({0} and {1})")]
    ConflictingOverrides(String, String),
}

impl Refusal {
    /// The `error` field of the JSON reply.
    pub fn code(&self) -> &'static str {
        match self {
            Self::RequestTarget | Self::TargetEncoding | Self::AmbiguousPath => {
                "invalid_request_target"
            }
            Self::Method(_) => "invalid_method",
            Self::OverrideMethod(_) => "invalid_method_override",
            Self::ConflictingOverrides(..) => "conflicting_method_override",
        }
    }
}

/// Decides how a request is priced. `headers` are (name, value) pairs as received.
pub fn normalise<'a>(
    method: &str,
    target: &[u8],
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    routes: &RouteTable,
    rules: &RequestRules,
) -> Result<PricedAs, Refusal> {
    let method = request_method(method)?;
    let target = std::str::from_utf8(target).map_err(|_| Refusal::TargetEncoding)?;
    let (path, query) = split_target(&method, target)?;
    let path = match canonical_path(path) {
        // Already canonical (the common case): nothing to decode, so nothing ambiguous.
        Cow::Borrowed(path) => path.to_owned(),
        // More layers of percent-encoding than are decoded leave a path other readers decode further.
        Cow::Owned(path) => {
            if canonical_path(&path) != path.as_str() {
                return Err(Refusal::AmbiguousPath);
            }
            path
        }
    };

    let mut overrides: Vec<String> = Vec::new();
    let mut drop_headers = Vec::new();
    for (name, value) in headers {
        if OVERRIDE_HEADERS.iter().any(|h| alias_of(name, h)) {
            overrides.push(override_method(value)?);
        }
        keep_dropped(name, rules, &mut drop_headers);
    }
    if method == http::Method::POST {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if key == "_method" {
                overrides.push(override_method(value.as_bytes())?);
            }
        }
    }

    let mut chosen: Option<&str> = None;
    for o in &overrides {
        match chosen {
            Some(c) if c != o => return Err(Refusal::ConflictingOverrides(c.into(), o.clone())),
            _ => chosen = Some(o),
        }
    }
    let priced_method = chosen
        .and_then(|o| priced_override(o, &path, routes))
        .unwrap_or(method);
    Ok(PricedAs {
        method: priced_method,
        path,
        drop_headers,
    })
}

/// The override as a method, when a priced route serves it on `path`.
fn priced_override(name: &str, path: &str, routes: &RouteTable) -> Option<http::Method> {
    http::Method::from_bytes(name.as_bytes())
        .ok()
        .filter(|m| routes.find(m, path).is_some_and(|r| r.kind.is_priced()))
}

/// Whether the body of a request priced as `priced` must be read for a `_method` field before
/// the price is final: a POST that no override reprices yet, on a path another method is priced
/// on (see [`super::body_override`]).
pub fn body_could_reprice(
    request_method: &http::Method,
    priced: &PricedAs,
    routes: &RouteTable,
) -> bool {
    *request_method == http::Method::POST
        && priced.method == http::Method::POST
        && routes.priced_for_another_method(&http::Method::POST, &priced.path)
}

/// `priced`, repriced by the `_method` a body names when that method is priced on the path.
pub fn reprice_by_body(
    mut priced: PricedAs,
    body_method: Option<&str>,
    routes: &RouteTable,
) -> PricedAs {
    if let Some(method) = body_method.and_then(|m| priced_override(m, &priced.path, routes)) {
        priced.method = method;
    }
    priced
}

/// The names (lower-case) of the headers to remove before the upstream; the same decision as in
/// [`normalise`], for the phase that only edits headers.
pub fn headers_to_drop<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    rules: &RequestRules,
) -> Vec<String> {
    let mut drop_headers: Vec<String> = Vec::new();
    for (name, _) in headers {
        keep_dropped(name, rules, &mut drop_headers);
    }
    drop_headers
}

/// Adds `name` (lower-cased, once) to `dropped` when it must not reach the upstream.
fn keep_dropped(name: &str, rules: &RequestRules, dropped: &mut Vec<String>) {
    let underscore = name.contains('_');
    let drop = (rules.method_override == MethodOverride::Strip
        && OVERRIDE_HEADERS.iter().any(|h| alias_of(name, h)))
        || URL_HEADERS.iter().any(|h| alias_of(name, h))
        || (underscore
            && (rules.drop_underscore_headers
                || GATEWAY_HEADERS.iter().any(|h| alias_of(name, h))
                || GATEWAY_HEADER_PREFIXES
                    .iter()
                    .any(|p| name.get(..p.len()).is_some_and(|start| alias_of(start, p)))));
    if drop {
        let name = name.to_ascii_lowercase();
        if !dropped.contains(&name) {
            dropped.push(name);
        }
    }
}

/// Whether header `name` is `known` (lower-case, `-`-separated) to an upstream that ignores case
/// and reads `_` as `-`. Compared in place: this runs for every header of every request.
fn alias_of(name: &str, known: &str) -> bool {
    name.len() == known.len()
        && name
            .bytes()
            .zip(known.bytes())
            .all(|(a, k)| a.to_ascii_lowercase() == k || (a == b'_' && k == b'-'))
}

/// Method tokens are upper-case letters, with `-` and `_` as in WebDAV's `VERSION-CONTROL`.
fn is_upper_case_method(text: &[u8]) -> bool {
    !text.is_empty()
        && text
            .iter()
            .all(|b| b.is_ascii_uppercase() || matches!(b, b'-' | b'_'))
}

fn request_method(method: &str) -> Result<http::Method, Refusal> {
    if !is_upper_case_method(method.as_bytes()) {
        return Err(Refusal::Method(printable(method.as_bytes())));
    }
    http::Method::from_bytes(method.as_bytes()).map_err(|_| Refusal::Method(method.to_string()))
}

/// An override's method, upper-cased as Rails, Symfony and Express do before using it.
pub(super) fn override_method(value: &[u8]) -> Result<String, Refusal> {
    let upper = value.trim_ascii().to_ascii_uppercase();
    if !is_upper_case_method(&upper) {
        return Err(Refusal::OverrideMethod(printable(value)));
    }
    Ok(String::from_utf8_lossy(&upper).into_owned())
}

/// Client bytes for an error message: lossy, control characters escaped, at most 32 characters.
fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(32)
        .flat_map(char::escape_debug)
        .collect()
}

/// The path and query of a request-target, or a refusal for a form no route matching could see
/// the way the upstream does.
fn split_target<'t>(method: &http::Method, target: &'t str) -> Result<(&'t str, &'t str), Refusal> {
    if target == "*" {
        return if method == http::Method::OPTIONS {
            Ok(("*", ""))
        } else {
            Err(Refusal::RequestTarget)
        };
    }
    let path_and_query = if target.starts_with('/') {
        target
    } else {
        absolute_form_path(target).ok_or(Refusal::RequestTarget)?
    };
    // A fragment is not part of a request-target; whatever follows `#` is never a path.
    let path_and_query = path_and_query
        .split_once('#')
        .map_or(path_and_query, |(before, _)| before);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    Ok((if path.is_empty() { "/" } else { path }, query))
}

/// The path-and-query of an absolute-form `http://host/…` target (`""` for `http://host`).
fn absolute_form_path(target: &str) -> Option<&str> {
    let scheme_end = target.find("://")?;
    let scheme = &target[..scheme_end];
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if authority_end == 0 {
        return None;
    }
    Some(&rest[authority_end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::{Route, RouteKind, RoutePattern};

    fn routes() -> RouteTable {
        // Only the kind matters here; a priced route with no options is enough to be "priced".
        let priced = || {
            RouteKind::Priced(crate::pricing::PricedRoute {
                options: Vec::new(),
                description: String::new(),
                mime_type: String::new(),
                settle: crate::pricing::SettlementPolicy::AfterSuccess,
                verify: Default::default(),
                sync_settle: false,
                challenge: std::sync::OnceLock::new(),
                price_rules: Vec::new(),
                metering: None,
                access: None,
                discovery: None,
                settle_buffer: None,
            })
        };
        let route = |index, source: &str, kind| Route {
            index,
            source: source.into(),
            pattern: RoutePattern::parse(source).unwrap(),
            kind,
        };
        RouteTable::new(vec![
            route(0, "GET /paid", priced()),
            route(1, "DELETE /items/:id", priced()),
            route(2, "GET /free/**", RouteKind::Free),
        ])
    }

    fn run(method: &str, target: &str, headers: &[(&str, &str)]) -> Result<PricedAs, Refusal> {
        run_with(method, target, headers, &RequestRules::default())
    }

    fn run_with(
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        rules: &RequestRules,
    ) -> Result<PricedAs, Refusal> {
        normalise(
            method,
            target.as_bytes(),
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
            &routes(),
            rules,
        )
    }

    fn priced_as(method: &str, target: &str, headers: &[(&str, &str)]) -> (String, String) {
        let p = run(method, target, headers).unwrap();
        (p.method.to_string(), p.path)
    }

    #[test]
    fn targets_that_are_not_origin_form_absolute_form_or_asterisk_are_refused() {
        for target in [
            "paid",
            "%2fpaid",
            "paid?x=1",
            "./paid",
            "",
            "ftp://h/paid",
            "http:///paid",
        ] {
            assert_eq!(
                run("GET", target, &[]),
                Err(Refusal::RequestTarget),
                "{target}"
            );
        }
        assert_eq!(run("GET", "*", &[]), Err(Refusal::RequestTarget));
        assert_eq!(priced_as("OPTIONS", "*", &[]).1, "/*");
        assert_eq!(priced_as("GET", "http://h:80/PAID?x", &[]).1, "/paid");
        assert_eq!(priced_as("GET", "HTTPS://h", &[]).1, "/");
        assert_eq!(priced_as("GET", "http://h?q=/paid", &[]).1, "/");
        assert_eq!(priced_as("GET", "/paid#frag", &[]).1, "/paid");
        assert_eq!(
            normalise("GET", b"/pa\xffid", [], &routes(), &RequestRules::default()),
            Err(Refusal::TargetEncoding)
        );
        assert_eq!(Refusal::TargetEncoding.code(), "invalid_request_target");
        // Three layers of percent-encoding are decoded; a fourth would leave `%70` behind.
        assert_eq!(priced_as("GET", "/%252570aid", &[]).1, "/paid");
        assert_eq!(
            run("GET", "/%25252570aid", &[]),
            Err(Refusal::AmbiguousPath)
        );
    }

    #[test]
    fn methods_that_are_not_upper_case_are_refused() {
        for method in ["get", "Get", "head", "gEt", "GET1", "G.T"] {
            let refused = run(method, "/paid", &[]).unwrap_err();
            assert_eq!(refused.code(), "invalid_method", "{method}");
        }
        assert_eq!(priced_as("HEAD", "/paid", &[]).0, "HEAD");
        assert_eq!(
            priced_as("VERSION-CONTROL", "/paid", &[]).0,
            "VERSION-CONTROL"
        );
    }

    #[test]
    fn an_override_prices_the_request_as_the_overriding_method_when_that_is_priced() {
        for header in OVERRIDE_HEADERS {
            let p = run("POST", "/paid", &[(header, "get")]).unwrap();
            assert_eq!(p.method, http::Method::GET, "{header}");
            assert_eq!(p.drop_headers, vec![header.to_string()]);
        }
        assert_eq!(priced_as("POST", "/paid?_method=GET", &[]).0, "GET");
        assert_eq!(priced_as("POST", "/paid?%5Fmethod=get", &[]).0, "GET");
        assert_eq!(
            priced_as("POST", "/items/1?_method=delete", &[]).0,
            "DELETE"
        );
        // `_method` in the query is read on POST only, as the frameworks do.
        assert_eq!(priced_as("PUT", "/paid?_method=GET", &[]).0, "PUT");
        // An override to a method that is not priced leaves the request's own method.
        assert_eq!(
            priced_as("POST", "/paid", &[("x-http-method-override", "PATCH")]).0,
            "POST"
        );
        // Underscore spellings are the same header to a CGI-style upstream.
        assert_eq!(
            priced_as("POST", "/paid", &[("x_http_method_override", "GET")]).0,
            "GET"
        );
    }

    #[test]
    fn bad_or_conflicting_overrides_are_refused() {
        assert_eq!(
            run("POST", "/paid", &[("x-http-method", "GE T")])
                .unwrap_err()
                .code(),
            "invalid_method_override"
        );
        assert_eq!(
            run("POST", "/paid?_method=", &[]).unwrap_err().code(),
            "invalid_method_override"
        );
        let both = run(
            "POST",
            "/paid?_method=PUT",
            &[("x-http-method-override", "GET")],
        );
        assert_eq!(both.unwrap_err().code(), "conflicting_method_override");
        assert!(run(
            "POST",
            "/paid",
            &[("x-http-method", "GET"), ("x-method-override", "get")]
        )
        .is_ok());
    }

    #[test]
    fn forwarded_overrides_still_price_the_request() {
        let rules = RequestRules {
            method_override: MethodOverride::Forward,
            ..RequestRules::default()
        };
        let p = run_with(
            "POST",
            "/paid",
            &[("x-http-method-override", "GET")],
            &rules,
        )
        .unwrap();
        assert_eq!(p.method, http::Method::GET);
        assert!(p.drop_headers.is_empty());
    }

    #[test]
    fn url_headers_and_underscore_aliases_of_gateway_headers_are_dropped() {
        let p = run(
            "GET",
            "/free/x",
            &[
                ("x-original-url", "/paid"),
                ("X-Rewrite-URL", "/paid"),
                ("x_original_url", "/paid"),
                ("x_payment_payer", "0x1"),
                ("x_payment_amount", "999"),
                ("payment_signature", "e30="),
                ("x_forwarded_for", "1.2.3.4"),
                ("transfer_encoding", "chunked"),
                ("x_custom", "kept"),
                ("x-payment-payer", "stripped later by the proxy"),
                ("accept", "*/*"),
            ],
        )
        .unwrap();
        assert_eq!(
            p.drop_headers,
            [
                "x-original-url",
                "x-rewrite-url",
                "x_original_url",
                "x_payment_payer",
                "x_payment_amount",
                "payment_signature",
                "x_forwarded_for",
                "transfer_encoding"
            ]
        );
        let nginx_like = RequestRules {
            drop_underscore_headers: true,
            ..RequestRules::default()
        };
        let p = run_with(
            "GET",
            "/",
            &[("x_custom", "1"), ("x-custom", "2")],
            &nginx_like,
        )
        .unwrap();
        assert_eq!(p.drop_headers, ["x_custom"]);
    }

    #[test]
    fn headers_to_drop_agrees_with_normalise() {
        let headers = [
            ("x-http-method-override", "GET"),
            ("x-original-url", "/paid"),
            ("x_payment_payer", "0x1"),
            ("x_other", "1"),
            ("accept", "*/*"),
        ];
        for rules in [
            RequestRules::default(),
            RequestRules {
                method_override: MethodOverride::Forward,
                drop_underscore_headers: true,
            },
        ] {
            let from_normalise = run_with("POST", "/paid", &headers, &rules)
                .unwrap()
                .drop_headers;
            let alone = headers_to_drop(headers.iter().map(|(n, v)| (*n, v.as_bytes())), &rules);
            assert_eq!(from_normalise, alone);
        }
    }

    #[test]
    fn paths_are_canonical_and_lenient_spellings_reach_the_priced_path() {
        for target in [
            "/paid.",
            "/paid..",
            "/paid%2e",
            "/paid.%20",
            "/paid::$DATA",
            "/pa%C4%B1d",
            "/PA%C4%B0D",
            "/%EF%BD%90aid",
        ] {
            assert_eq!(priced_as("GET", target, &[]).1, "/paid", "{target}");
        }
        assert_eq!(priced_as("GET", "/ke%79%C5%BF", &[]).1, "/keys");
        assert_eq!(priced_as("GET", "/\u{212A}ey", &[]).1, "/key");
    }

    #[test]
    fn method_override_setting_parses() {
        assert_eq!(MethodOverride::parse("strip"), Ok(MethodOverride::Strip));
        assert_eq!(
            MethodOverride::parse("forward"),
            Ok(MethodOverride::Forward)
        );
        assert!(MethodOverride::parse("keep")
            .unwrap_err()
            .contains("expected"));
    }

    /// One character of a priced path, spelled in a way some upstream reads as that character.
    fn spell_char(c: char, how: u8) -> String {
        match (how % 6, c) {
            (1, c) => c.to_ascii_uppercase().to_string(),
            (2, c) => format!("%{:02X}", c as u32),
            (3, c) => format!("%25{:02X}", c as u32),
            (4, 'i') => "\u{131}".into(),
            (4, 's') => "\u{17F}".into(),
            (4, 'k') => "\u{212A}".into(),
            (4, c) if c.is_ascii_alphanumeric() => {
                char::from_u32(0xFF01 + (c as u32 - 0x21)).map_or(c.to_string(), String::from)
            }
            (5, 'i') => "%C4%B0".into(),
            _ => c.to_string(),
        }
    }

    const SEPARATORS: [&str; 6] = ["/", "//", "\\", "/./", "/zz/../", "%2F"];
    const SEGMENT_ENDS: [&str; 7] = ["", ".", "..", "%2e", ".%20", "::$DATA", ";v=1"];

    proptest::proptest! {
        #[test]
        fn any_spelling_of_a_priced_path_is_priced(
            segments in proptest::collection::vec("[a-z0-9][a-z0-9-]{0,7}", 1..4),
            char_spellings in proptest::collection::vec(0u8..12, 32),
            separators in proptest::collection::vec(0usize..SEPARATORS.len(), 4),
            ends in proptest::collection::vec(0usize..SEGMENT_ENDS.len(), 4),
            trailing_slash in proptest::bool::ANY,
            query in proptest::bool::ANY,
        ) {
            let route = format!("GET /{}", segments.join("/"));
            let table = RouteTable::new(vec![Route {
                index: 0,
                source: route.clone(),
                pattern: RoutePattern::parse(&route).unwrap(),
                kind: RouteKind::Priced(crate::pricing::PricedRoute {
                    options: Vec::new(),
                    description: String::new(),
                    mime_type: String::new(),
                    settle: crate::pricing::SettlementPolicy::AfterSuccess,
                    verify: Default::default(),
                    sync_settle: false,
                    challenge: std::sync::OnceLock::new(),
                    price_rules: Vec::new(),
                    metering: None,
                    access: None,
                    discovery: None,
                    settle_buffer: None,
                }),
            }]);
            let mut spelling = String::new();
            let mut hows = char_spellings.iter().cycle();
            for (i, segment) in segments.iter().enumerate() {
                spelling.push_str(if i == 0 { "/" } else { SEPARATORS[separators[i]] });
                for c in segment.chars() {
                    spelling.push_str(&spell_char(c, *hows.next().unwrap_or(&0)));
                }
                spelling.push_str(SEGMENT_ENDS[ends[i]]);
            }
            if trailing_slash {
                spelling.push('/');
            }
            if query {
                spelling.push_str("?free=1");
            }
            for method in ["GET", "HEAD"] {
                let priced = normalise(method, spelling.as_bytes(), [], &table, &RequestRules::default())
                    .unwrap_or_else(|e| panic!("{spelling}: {e}"));
                let route = table.find(&priced.method, &priced.path);
                proptest::prop_assert!(
                    route.is_some_and(|r| matches!(r.kind, RouteKind::Priced(_))),
                    "{} {} (canonical {}) is not priced by {}", method, spelling, priced.path, table.in_file_order()[0].source
                );
            }
        }

        #[test]
        fn the_canonical_form_is_a_fixed_point(path in "/[a-zA-Z0-9%./\\ \u{80}-\u{2FFF}\u{FF00}-\u{FFEF}]{0,24}") {
            let once = canonical_path(&path).into_owned();
            let twice = canonical_path(&once).into_owned();
            proptest::prop_assert_eq!(once, twice, "{}", path);
        }
    }
}
