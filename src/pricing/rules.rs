//! Prices that depend on the request: rules written in `gateway.toml` that pick another price for
//! a route from a query parameter, a header, a path parameter or the size of the body.
//!
//! Each rule carries its own fully built payment options, so the challenge a buyer receives and the
//! checks its payment goes through both come from the very same data. When several rules match, the
//! highest price wins (so body-size tiers can be listed in any order); when the request is ambiguous
//! (a named parameter repeated with different values, a header that is not text, a body whose size
//! is not announced) the highest price of the route applies, because the upstream may read the
//! request differently from the gateway.

use super::routes::PricedRoute;

/// What a rule looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceCondition {
    /// A query-string parameter (decoded as `application/x-www-form-urlencoded`).
    Query { name: String, values: Vec<String> },
    /// A request header.
    Header {
        name: http::HeaderName,
        values: Vec<String>,
    },
    /// A `:name` segment of the route's pattern, read from the canonical (lower-case) path.
    PathParam {
        name: String,
        position: usize,
        values: Vec<String>,
    },
    /// A request body larger than this many bytes.
    BodyOver(u64),
}

/// How a condition reads one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleMatch {
    No,
    Yes,
    /// The request can be read in more than one way: charge the route's highest price.
    Ambiguous,
}

/// The parts of a request prices may depend on; no proxy types.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The canonical path (see `canonical_path`).
    pub canonical_path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
}

impl RequestFacts<'_> {
    /// The announced body size: `Some(0)` without a body, `None` when it is not announced
    /// (chunked) or cannot be read.
    fn body_len(&self) -> Option<u64> {
        let mut lengths = self.headers.get_all(http::header::CONTENT_LENGTH).iter();
        match (lengths.next(), lengths.next()) {
            (None, _) if self.headers.contains_key(http::header::TRANSFER_ENCODING) => None,
            (None, _) => Some(0),
            (Some(one), None) => one.to_str().ok()?.trim().parse().ok(),
            (Some(_), Some(_)) => None,
        }
    }
}

/// `Yes` when `found` holds one value (repeats allowed if all equal) that is listed in
/// `values`, or any value when `values` is empty; `Ambiguous` for differing repeats.
fn judge(found: &[String], values: &[String]) -> RuleMatch {
    let Some(first) = found.first() else {
        return RuleMatch::No;
    };
    if found.iter().any(|v| v != first) {
        return RuleMatch::Ambiguous;
    }
    if values.is_empty() || values.contains(first) {
        RuleMatch::Yes
    } else {
        RuleMatch::No
    }
}

impl PriceCondition {
    pub fn test(&self, request: &RequestFacts<'_>) -> RuleMatch {
        match self {
            Self::Query { name, values } => {
                let found: Vec<String> = request
                    .query
                    .map(|q| {
                        url::form_urlencoded::parse(q.as_bytes())
                            .filter(|(k, _)| k == name)
                            .map(|(_, v)| v.into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                judge(&found, values)
            }
            Self::Header { name, values } => {
                let mut found = Vec::new();
                for value in request.headers.get_all(name) {
                    match value.to_str() {
                        Ok(text) => found.push(text.trim().to_string()),
                        Err(_) => return RuleMatch::Ambiguous,
                    }
                }
                judge(&found, values)
            }
            Self::PathParam {
                position, values, ..
            } => {
                let segment = request
                    .canonical_path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .nth(*position);
                let found: Vec<String> = segment.map(str::to_string).into_iter().collect();
                judge(&found, values)
            }
            Self::BodyOver(limit) => match request.body_len() {
                Some(len) if len > *limit => RuleMatch::Yes,
                Some(_) => RuleMatch::No,
                None => RuleMatch::Ambiguous,
            },
        }
    }

    /// How `check` and the discovery document name the condition.
    pub fn describe(&self) -> String {
        let listed = |values: &[String]| {
            if values.is_empty() {
                " is present".to_string()
            } else {
                format!(" = {}", values.join(" | "))
            }
        };
        match self {
            Self::Query { name, values } => format!("query {name}{}", listed(values)),
            Self::Header { name, values } => format!("header {name}{}", listed(values)),
            Self::PathParam { name, values, .. } => format!("path :{name}{}", listed(values)),
            Self::BodyOver(bytes) => format!("body over {bytes} bytes"),
        }
    }

    /// The condition as JSON for the discovery document.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Query { name, values } => serde_json::json!({"query": name, "equals": values}),
            Self::Header { name, values } => {
                serde_json::json!({"header": name.as_str(), "equals": values})
            }
            Self::PathParam { name, values, .. } => {
                serde_json::json!({"pathParam": name, "equals": values})
            }
            Self::BodyOver(bytes) => serde_json::json!({"bodyOver": bytes}),
        }
    }
}

/// A price rule: when `condition` holds, the request pays `priced` (same options, in the same
/// order, as the route, at another price).
#[derive(Debug, Clone)]
pub struct PriceRule {
    pub condition: PriceCondition,
    pub priced: PricedRoute,
}

/// The amount rules are compared by: the first option's (every option of a rule carries the
/// same price in its own asset's units).
fn headline(route: &PricedRoute) -> u128 {
    route.options.first().map_or(0, |o| o.amount)
}

impl PricedRoute {
    /// The terms this request pays: the highest-priced matching rule, the route's own price when
    /// none matches, the highest price of all when the request is ambiguous.
    pub fn for_request(&self, request: &RequestFacts<'_>) -> &PricedRoute {
        // Most routes have no rules: nothing of the request needs reading.
        if self.price_rules.is_empty() {
            return self;
        }
        let mut chosen: Option<&PricedRoute> = None;
        for rule in &self.price_rules {
            match rule.condition.test(request) {
                RuleMatch::No => {}
                RuleMatch::Yes => {
                    if chosen.is_none_or(|c| headline(&rule.priced) > headline(c)) {
                        chosen = Some(&rule.priced);
                    }
                }
                RuleMatch::Ambiguous => return self.most_expensive(),
            }
        }
        chosen.unwrap_or(self)
    }

    fn most_expensive(&self) -> &PricedRoute {
        self.price_rules
            .iter()
            .map(|r| &r.priced)
            .fold(self, |best, r| {
                if headline(r) > headline(best) {
                    r
                } else {
                    best
                }
            })
    }
}
