//! The route table: `"METHOD /path/:param/*/**"` patterns, most-specific-first matching on the
//! canonical path, and overlap reporting for `check`.
//!
//! Routes are held in a segment tree, so matching costs the depth of the path rather than the
//! number of routes, and `check` finds overlapping pairs without comparing every pair.

use super::path::canonical_path;
use super::SettlementPolicy;
use crate::x402::{PaymentRequirements, PaymentRequirementsV1};
use std::cmp::Ordering;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A literal segment, stored in canonical (lower-case) form.
    Literal(String),
    /// `:name` or `*`: exactly one segment.
    One,
    /// `**`: the rest of the path, zero or more segments; only as the last segment.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MethodMatch {
    Any,
    Only(http::Method),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    pub method: MethodMatch,
    pub segments: Vec<Segment>,
    /// The `:name` segments: name and position.
    pub params: Vec<(String, usize)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("route `{0}` must be \"METHOD /path\", e.g. \"GET /api/data\" or \"* /api/**\"")]
    Shape(String),
    #[error("route `{0}`: `{1}` is not an HTTP method")]
    Method(String, String),
    #[error("route `{0}`: `**` may only be the last segment")]
    RestNotLast(String),
}

impl RoutePattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let mut parts = text.split_whitespace();
        let (Some(method), Some(path), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(PatternError::Shape(text.to_string()));
        };
        if !path.starts_with('/') {
            return Err(PatternError::Shape(text.to_string()));
        }
        let method = if method == "*" {
            MethodMatch::Any
        } else {
            let upper = method.to_ascii_uppercase();
            let parsed = http::Method::from_bytes(upper.as_bytes())
                .ok()
                .filter(|_| upper.chars().all(|c| c.is_ascii_uppercase()))
                .ok_or_else(|| PatternError::Method(text.to_string(), method.to_string()))?;
            MethodMatch::Only(parsed)
        };
        let raw_segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut segments = Vec::with_capacity(raw_segments.len());
        let mut params = Vec::new();
        for (i, raw) in raw_segments.iter().enumerate() {
            let segment = match *raw {
                "**" if i + 1 == raw_segments.len() => Segment::Rest,
                "**" => return Err(PatternError::RestNotLast(text.to_string())),
                "*" => Segment::One,
                s if s.starts_with(':') && s.len() > 1 => {
                    params.push((s[1..].to_string(), i));
                    Segment::One
                }
                s => {
                    // Literal segments go through the same canonicalisation as request paths.
                    let slashed = format!("/{s}");
                    let canonical = canonical_path(&slashed);
                    Segment::Literal(canonical.trim_start_matches('/').to_string())
                }
            };
            segments.push(segment);
        }
        Ok(Self {
            method,
            segments,
            params,
        })
    }

    /// Whether the canonical `path` (split in segments) and `method` match this pattern.
    /// Whether `method` on the canonical path `canonical` matches this pattern.
    /// The position of the `:name` segment.
    pub fn param_position(&self, name: &str) -> Option<usize> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }

    pub fn matches(&self, method: &http::Method, canonical: &str) -> bool {
        if !self.allows(method) {
            return false;
        }
        let mut path = canonical.split('/').filter(|s| !s.is_empty());
        for segment in &self.segments {
            match (segment, path.next()) {
                (Segment::Rest, _) => return true,
                (_, None) => return false,
                (Segment::One, Some(_)) => {}
                (Segment::Literal(lit), Some(got)) if lit == got => {}
                (Segment::Literal(_), Some(_)) => return false,
            }
        }
        path.next().is_none()
    }

    /// Whether a request with `method` can match this pattern's method.
    fn allows(&self, method: &http::Method) -> bool {
        match &self.method {
            MethodMatch::Any => true,
            // HEAD is a GET without a body: it is priced like the GET it mirrors.
            MethodMatch::Only(m) => {
                m == method || (m == http::Method::GET && method == http::Method::HEAD)
            }
        }
    }

    /// Whether some method is allowed by both patterns.
    fn methods_meet(&self, other: &Self) -> bool {
        match (&self.method, &other.method) {
            (MethodMatch::Only(a), MethodMatch::Only(b)) => a == b,
            _ => true,
        }
    }

    /// Ordering by specificity, position by position: a literal beats a one-segment wildcard,
    /// which beats the end of a pattern, which beats `**`; at equal shape a named method beats `*`.
    fn specificity_cmp(&self, other: &Self) -> Ordering {
        let rank = |s: Option<&Segment>| match s {
            Some(Segment::Literal(_)) => 4,
            Some(Segment::One) => 3,
            None => 2,
            Some(Segment::Rest) => 1,
        };
        let longest = self.segments.len().max(other.segments.len());
        for i in 0..=longest {
            match rank(self.segments.get(i)).cmp(&rank(other.segments.get(i))) {
                Ordering::Equal if i < longest => continue,
                Ordering::Equal => break,
                unequal => return unequal,
            }
        }
        let named = |p: &Self| matches!(p.method, MethodMatch::Only(_));
        named(self).cmp(&named(other))
    }

    /// Whether some request could match both patterns.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.methods_meet(other) && segments_meet(&self.segments, &other.segments)
    }
}

/// Whether every path `b` matches is matched by `a` too.
fn segments_cover(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (Some(Segment::Rest), _) => true,
        (None, None) => true,
        (Some(Segment::One), Some(Segment::Literal(_) | Segment::One)) => {
            segments_cover(&a[1..], &b[1..])
        }
        (Some(Segment::Literal(x)), Some(Segment::Literal(y))) if x == y => {
            segments_cover(&a[1..], &b[1..])
        }
        _ => false,
    }
}

fn segments_meet(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (Some(Segment::Rest), _) | (_, Some(Segment::Rest)) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(x), Some(y)) => {
            let compatible = match (x, y) {
                (Segment::Literal(p), Segment::Literal(q)) => p == q,
                _ => true,
            };
            compatible && segments_meet(&a[1..], &b[1..])
        }
    }
}

/// One accepted way to pay for a route, built from configuration only.
#[derive(Debug, Clone)]
pub struct PaymentOption {
    /// The v2 requirements exactly as advertised and as sent to the facilitator.
    pub requirements: PaymentRequirements,
    /// EVM chain id from the CAIP-2 network, for the EIP-712 domain.
    pub chain_id: u64,
    /// The v1 network name, when v1 clients know this network.
    pub v1_network: Option<&'static str>,
    /// Atomic amount as a number, for comparisons and metrics.
    pub amount: u128,
    /// Symbol of the asset, for people reading logs and `check`.
    pub asset_symbol: String,
    pub decimals: u8,
    /// The EIP-712 domain separator of the option's token, hashed at its first payment (`None`
    /// when the asset is no address); the payment checks fill it in.
    pub domain_separator: std::sync::OnceLock<Option<alloy_primitives::B256>>,
}

impl PaymentOption {
    /// The v1 shape of this option for a given absolute resource URL; `None` without a v1 name.
    pub fn v1_requirements(
        &self,
        resource: &str,
        description: &str,
        mime_type: &str,
        method: &str,
    ) -> Option<PaymentRequirementsV1> {
        let network = self.v1_network?;
        let r = &self.requirements;
        Some(PaymentRequirementsV1 {
            scheme: r.scheme.clone(),
            network: network.to_string(),
            max_amount_required: r.amount.clone(),
            resource: resource.to_string(),
            description: description.to_string(),
            mime_type: mime_type.to_string(),
            pay_to: r.pay_to.clone(),
            max_timeout_seconds: r.max_timeout_seconds,
            asset: r.asset.clone(),
            output_schema: Some(serde_json::json!({
                "input": {"type": "http", "method": method, "discoverable": true},
                "output": null
            })),
            extra: r.extra.clone(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct PricedRoute {
    pub options: Vec<PaymentOption>,
    pub description: String,
    pub mime_type: String,
    pub settle: SettlementPolicy,
    /// Whether `/verify` is asked before the upstream (`verify = "local"` skips it).
    pub verify: super::VerifyPolicy,
    /// Ask the facilitator to wait for on-chain confirmation before answering `/settle` (OKX).
    pub sync_settle: bool,
    /// The route's challenge documents, prepared at its first 402.
    pub challenge: std::sync::OnceLock<super::ChallengeTemplate>,
    /// Other prices for some requests, in file order (empty for a rule's own terms).
    pub price_rules: Vec<super::PriceRule>,
    /// Set on metered (`upto`) routes: the price is a maximum, the charge is read from the
    /// response. Boxed: most routes are not metered.
    pub metering: Option<Box<super::Metering>>,
    /// How long a settled payment lets its payer sign in to the same resource instead of paying
    /// again (`access = "24h"`); `None`: every request pays.
    pub access: Option<std::time::Duration>,
    /// Set on routes listed in the Bazaar: what their challenges declare for catalogs. Shared:
    /// a route's price rules declare the same call.
    pub discovery: Option<std::sync::Arc<super::discovery::Discovery>>,
    /// The route's own bound of an answer received whole before it is settled (`settle_buffer`,
    /// in bytes, at most 64 MiB); `None`: `[server] settle_buffer`.
    pub settle_buffer: Option<u32>,
}

impl PricedRoute {
    /// The route's challenge documents (prepared once per configuration version).
    pub fn challenge(&self) -> &super::ChallengeTemplate {
        self.challenge.get_or_init(|| {
            super::ChallengeTemplate::new(
                &self.options,
                &self.description,
                &self.mime_type,
                self.discovery.as_deref(),
            )
        })
    }

    /// The `bazaar` declaration of a challenge answering `method` on `resource_url`, when the
    /// route is listed in the Bazaar.
    pub fn bazaar_declaration(
        &self,
        method: &str,
        resource_url: &str,
    ) -> Option<serde_json::Value> {
        self.discovery
            .as_ref()
            .and_then(|d| d.declaration(method, resource_url))
    }

    /// The v2 `PaymentRequired` JSON of a challenge answering `method` on `resource_url`.
    pub fn v2_challenge(&self, resource_url: &str, method: &str, error: &str) -> String {
        let bazaar = self.bazaar_declaration(method, resource_url);
        self.challenge()
            .v2_json_declaring(resource_url, error, bazaar.as_ref())
    }

    /// Every extension a challenge answering `method` on `resource_url` declares, by key: what a
    /// payment's echo is held to.
    pub fn declared_extensions(
        &self,
        method: &str,
        resource_url: &str,
    ) -> std::borrow::Cow<'static, serde_json::Map<String, serde_json::Value>> {
        let common = super::challenge::declared_extensions();
        // Most routes declare only the common extensions: borrowed, not copied per payment.
        match self.bazaar_declaration(method, resource_url) {
            None => std::borrow::Cow::Borrowed(common),
            Some(bazaar) => {
                let mut declared = common.clone();
                declared.insert(super::discovery::BAZAAR.into(), bazaar);
                std::borrow::Cow::Owned(declared)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub enum RouteKind {
    Free,
    Priced(PricedRoute),
    /// An MCP server's endpoint, priced per tool, resource and prompt.
    Mcp(super::mcp::McpRoute),
}

impl RouteKind {
    /// Every price of the route: its own, or each of its MCP items'.
    pub fn priced_routes(&self) -> impl Iterator<Item = &PricedRoute> {
        let (own, items) = match self {
            Self::Free => (None, &[][..]),
            Self::Priced(p) => (Some(p), &[][..]),
            Self::Mcp(m) => (None, m.items.as_slice()),
        };
        own.into_iter().chain(items.iter().map(|i| &i.priced))
    }

    /// Whether some request to the route may have to pay.
    pub fn is_priced(&self) -> bool {
        self.priced_routes().next().is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Position in `gateway.toml` (0-based), to name the route in messages.
    pub index: usize,
    /// The `match` string as written.
    pub source: String,
    pub pattern: RoutePattern,
    pub kind: RouteKind,
}

impl Route {
    /// A short name for logs and metrics: the `match` string.
    pub fn label(&self) -> &str {
        &self.source
    }
}

/// Routes in matching order (most specific first, then file order), and the segment tree that
/// finds the first of them a request matches.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    tree: Node,
    /// Position in `routes` of each route, by its place in the file.
    by_index: Vec<usize>,
}

/// One position of the segment tree. Route numbers are positions in `RouteTable::routes`, so in
/// each list the first route whose method fits is the one the linear order would pick.
#[derive(Debug, Clone, Default)]
struct Node {
    literals: HashMap<String, Node>,
    /// `:name` / `*` at this position.
    one: Option<Box<Node>>,
    /// Routes whose pattern ends at this position.
    end: Vec<usize>,
    /// Routes whose pattern is `**` at this position.
    rest: Vec<usize>,
}

type Segments<'a> = std::iter::Filter<std::str::Split<'a, char>, fn(&&'a str) -> bool>;

fn non_empty(segment: &&str) -> bool {
    !segment.is_empty()
}

fn segments_of(canonical: &str) -> Segments<'_> {
    canonical.split('/').filter(non_empty as fn(&&str) -> bool)
}

impl Node {
    fn insert(&mut self, segments: &[Segment], position: usize) {
        match segments.split_first() {
            None => self.end.push(position),
            Some((Segment::Rest, _)) => self.rest.push(position),
            Some((Segment::Literal(text), tail)) => self
                .literals
                .entry(text.clone())
                .or_default()
                .insert(tail, position),
            Some((Segment::One, tail)) => self.one.get_or_insert_default().insert(tail, position),
        }
    }

    /// The first route in specificity order matching the remaining `path`: at each position a
    /// literal beats a wildcard, which beats the end of a pattern, which beats `**` — the order
    /// of `RoutePattern::specificity_cmp`, explored depth first.
    fn find(&self, mut path: Segments<'_>, fits: &impl Fn(usize) -> bool) -> Option<usize> {
        match path.next() {
            Some(segment) => {
                let literal = self.literals.get(segment);
                if let Some(hit) = literal.and_then(|n| n.find(path.clone(), fits)) {
                    return Some(hit);
                }
                if let Some(hit) = self.one.as_ref().and_then(|n| n.find(path, fits)) {
                    return Some(hit);
                }
            }
            None => {
                if let Some(&hit) = self.end.iter().find(|&&p| fits(p)) {
                    return Some(hit);
                }
            }
        }
        self.rest.iter().copied().find(|&p| fits(p))
    }

    /// Every route whose segments meet `segments` (see `segments_meet`).
    fn meeting(&self, segments: &[Segment], out: &mut Vec<usize>) {
        out.extend_from_slice(&self.rest);
        match segments.split_first() {
            None => out.extend_from_slice(&self.end),
            Some((Segment::Rest, _)) => self.all_below(out),
            Some((Segment::Literal(text), tail)) => {
                if let Some(node) = self.literals.get(text) {
                    node.meeting(tail, out);
                }
                if let Some(node) = &self.one {
                    node.meeting(tail, out);
                }
            }
            Some((Segment::One, tail)) => {
                for node in self.literals.values() {
                    node.meeting(tail, out);
                }
                if let Some(node) = &self.one {
                    node.meeting(tail, out);
                }
            }
        }
    }

    /// Every route at this position or deeper, except this position's `rest` (already taken).
    fn all_below(&self, out: &mut Vec<usize>) {
        out.extend_from_slice(&self.end);
        for node in self.literals.values().chain(self.one.as_deref()) {
            out.extend_from_slice(&node.rest);
            node.all_below(out);
        }
    }
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by(|a, b| {
            b.pattern
                .specificity_cmp(&a.pattern)
                .then(a.index.cmp(&b.index))
        });
        let mut tree = Node::default();
        let mut by_index = vec![usize::MAX; routes.iter().map(|r| r.index + 1).max().unwrap_or(0)];
        for (position, route) in routes.iter().enumerate() {
            tree.insert(&route.pattern.segments, position);
            by_index[route.index] = position;
        }
        Self {
            routes,
            tree,
            by_index,
        }
    }

    /// Routes in file order.
    pub fn in_file_order(&self) -> Vec<&Route> {
        self.by_index
            .iter()
            .filter_map(|&position| self.routes.get(position))
            .collect()
    }

    /// Whether any priced route gives access windows.
    pub fn has_access(&self) -> bool {
        self.routes
            .iter()
            .any(|route| route.kind.priced_routes().any(|p| p.access.is_some()))
    }

    /// Whether any priced route (or price rule) offers an option of `scheme`.
    pub fn has_scheme(&self, scheme: &str) -> bool {
        self.routes.iter().any(|route| {
            route.kind.priced_routes().any(|priced| {
                std::iter::once(priced)
                    .chain(priced.price_rules.iter().map(|r| &r.priced))
                    .flat_map(|p| &p.options)
                    .any(|o| o.requirements.scheme == scheme)
            })
        })
    }

    /// Applies `complete` to every payment option of the priced routes, of their price rules and
    /// of priced MCP items, to complete them once at start-up with what only a facilitator (or
    /// the gateway's own key) can tell.
    pub fn complete_options(&mut self, mut complete: impl FnMut(&mut PaymentOption)) {
        for route in &mut self.routes {
            match &mut route.kind {
                RouteKind::Priced(priced) => {
                    priced.options.iter_mut().for_each(&mut complete);
                    for rule in &mut priced.price_rules {
                        rule.priced.options.iter_mut().for_each(&mut complete);
                    }
                }
                RouteKind::Mcp(mcp) => {
                    for item in &mut mcp.items {
                        item.priced.options.iter_mut().for_each(&mut complete);
                    }
                }
                RouteKind::Free => {}
            }
        }
    }

    /// The route at position `index` of the file.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(*self.by_index.get(index)?)
    }

    /// The route serving `method` on `raw_path` (matched in canonical form), if any.
    pub fn find(&self, method: &http::Method, raw_path: &str) -> Option<&Route> {
        let canonical = canonical_path(raw_path);
        let fits = |position: usize| self.routes[position].pattern.allows(method);
        let position = self.tree.find(segments_of(&canonical), &fits)?;
        self.routes.get(position)
    }

    /// Whether a priced route for some method other than `method` could serve `raw_path`: then a
    /// request of `method` that an upstream reroutes by a method override may owe another price.
    pub fn priced_for_another_method(&self, method: &http::Method, raw_path: &str) -> bool {
        let canonical = canonical_path(raw_path);
        let fits = |position: usize| {
            let route = &self.routes[position];
            route.kind.is_priced()
                && matches!(&route.pattern.method, MethodMatch::Only(m) if m != method)
        };
        self.tree.find(segments_of(&canonical), &fits).is_some()
    }

    /// Priced routes naming a method whose paths no `*` route covers: other methods on those
    /// paths are not priced by any route (in file order).
    pub fn priced_for_some_methods(&self) -> Vec<&Route> {
        self.in_file_order()
            .into_iter()
            .filter(|r| {
                r.kind.is_priced()
                    && matches!(r.pattern.method, MethodMatch::Only(_))
                    && !self.routes.iter().any(|other| {
                        other.pattern.method == MethodMatch::Any
                            && segments_cover(&other.pattern.segments, &r.pattern.segments)
                    })
            })
            .collect()
    }

    /// Pairs of routes some request could match both of: (winner, shadowed) in file terms.
    pub fn overlaps(&self) -> Vec<(&Route, &Route)> {
        let mut found = Vec::new();
        let mut meeting = Vec::new();
        for (position, a) in self.routes.iter().enumerate() {
            meeting.clear();
            self.tree.meeting(&a.pattern.segments, &mut meeting);
            meeting.retain(|&b| b > position && a.pattern.methods_meet(&self.routes[b].pattern));
            meeting.sort_unstable();
            found.extend(meeting.iter().map(|&b| (a, &self.routes[b])));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(patterns: &[&str]) -> RouteTable {
        RouteTable::new(
            patterns
                .iter()
                .enumerate()
                .map(|(index, p)| Route {
                    index,
                    source: p.to_string(),
                    pattern: RoutePattern::parse(p).unwrap(),
                    kind: RouteKind::Free,
                })
                .collect(),
        )
    }

    fn winner(t: &RouteTable, method: &str, path: &str) -> Option<String> {
        t.find(&http::Method::from_bytes(method.as_bytes()).unwrap(), path)
            .map(|r| r.source.clone())
    }

    #[test]
    fn most_specific_route_wins_whatever_the_file_order() {
        let t = table(&[
            "* /api/**",
            "GET /api/:id",
            "GET /api/special",
            "POST /api/special",
            "GET /api/*/items",
        ]);
        assert_eq!(
            winner(&t, "GET", "/api/special").as_deref(),
            Some("GET /api/special")
        );
        assert_eq!(
            winner(&t, "POST", "/api/special").as_deref(),
            Some("POST /api/special")
        );
        assert_eq!(
            winner(&t, "GET", "/api/42").as_deref(),
            Some("GET /api/:id")
        );
        assert_eq!(
            winner(&t, "DELETE", "/api/42").as_deref(),
            Some("* /api/**")
        );
        assert_eq!(
            winner(&t, "GET", "/api/42/items").as_deref(),
            Some("GET /api/*/items")
        );
        assert_eq!(
            winner(&t, "GET", "/api").as_deref(),
            Some("* /api/**"),
            "** also covers the prefix itself"
        );
        assert_eq!(winner(&t, "GET", "/other"), None);
    }

    #[test]
    fn head_is_priced_like_get_and_paths_are_canonical() {
        let t = table(&["GET /Premium/Data"]);
        assert_eq!(
            winner(&t, "HEAD", "/premium/data").as_deref(),
            Some("GET /Premium/Data")
        );
        assert_eq!(
            winner(&t, "GET", "/PREMIUM//data/").as_deref(),
            Some("GET /Premium/Data")
        );
        assert_eq!(
            winner(&t, "GET", "/x/..%2Fpremium%2fdata").as_deref(),
            Some("GET /Premium/Data")
        );
        assert_eq!(winner(&t, "POST", "/premium/data"), None);
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(matches!(
            RoutePattern::parse("/api"),
            Err(PatternError::Shape(_))
        ));
        assert!(matches!(
            RoutePattern::parse("GET api"),
            Err(PatternError::Shape(_))
        ));
        assert!(matches!(
            RoutePattern::parse("GE(T /api"),
            Err(PatternError::Method(..))
        ));
        assert!(matches!(
            RoutePattern::parse("GET /a/**/b"),
            Err(PatternError::RestNotLast(_))
        ));
        assert_eq!(
            RoutePattern::parse("get /a").unwrap().method,
            MethodMatch::Only(http::Method::GET)
        );
    }

    /// Patterns mixing every kind of segment and method, and paths that hit and miss them.
    fn mixed_patterns() -> Vec<String> {
        let methods = ["GET", "POST", "*"];
        let segments = ["a", "b", ":id", "*", "**"];
        let mut patterns = vec!["* /**".to_string(), "GET /".to_string()];
        for (i, m) in methods.iter().enumerate() {
            for (j, first) in segments.iter().enumerate() {
                patterns.push(format!("{m} /{first}"));
                if *first == "**" {
                    continue;
                }
                for (k, second) in segments.iter().enumerate() {
                    if (i + j + k) % 2 == 0 {
                        patterns.push(format!("{m} /{first}/{second}"));
                    }
                    if (i + j * k) % 3 == 0 && *second != "**" {
                        patterns.push(format!("{m} /{first}/{second}/c"));
                    }
                }
            }
        }
        patterns
    }

    /// The table's answer the slow way: the first route in specificity order that matches.
    fn linear_winner(t: &RouteTable, method: &http::Method, path: &str) -> Option<usize> {
        let canonical = canonical_path(path);
        t.routes
            .iter()
            .find(|r| r.pattern.matches(method, &canonical))
            .map(|r| r.index)
    }

    #[test]
    fn tree_matching_agrees_with_specificity_order() {
        let patterns = mixed_patterns();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        // File order must not matter: the same patterns forwards and backwards.
        for order in [refs.clone(), refs.iter().rev().copied().collect()] {
            let t = table(&order);
            let words = ["", "a", "b", "z", "A"];
            let mut checked = 0;
            for method in ["GET", "HEAD", "POST", "DELETE"] {
                let method = http::Method::from_bytes(method.as_bytes()).unwrap();
                for x in words {
                    for y in words {
                        for z in ["", "c", "d"] {
                            let path = format!("/{x}/{y}/{z}");
                            let tree = t.find(&method, &path).map(|r| r.index);
                            assert_eq!(tree, linear_winner(&t, &method, &path), "{method} {path}");
                            checked += usize::from(tree.is_some());
                        }
                    }
                }
            }
            assert!(checked > 100, "the paths must hit routes, not only miss");
        }
    }

    #[test]
    fn named_method_and_file_order_break_ties() {
        let t = table(&["* /x/:a", "GET /x/:b", "GET /x/*", "* /x/**"]);
        assert_eq!(winner(&t, "GET", "/x/1").as_deref(), Some("GET /x/:b"));
        assert_eq!(winner(&t, "HEAD", "/x/1").as_deref(), Some("GET /x/:b"));
        assert_eq!(winner(&t, "PUT", "/x/1").as_deref(), Some("* /x/:a"));
        assert_eq!(winner(&t, "PUT", "/x/1/2").as_deref(), Some("* /x/**"));
        assert_eq!(winner(&t, "PUT", "/x").as_deref(), Some("* /x/**"));
    }

    #[test]
    fn overlaps_agree_with_comparing_every_pair() {
        let patterns = mixed_patterns();
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let t = table(&refs);
        let mut pairwise = Vec::new();
        for (i, a) in t.routes.iter().enumerate() {
            for b in &t.routes[i + 1..] {
                if a.pattern.overlaps(&b.pattern) {
                    pairwise.push((a.index, b.index));
                }
            }
        }
        let fast: Vec<(usize, usize)> = t
            .overlaps()
            .iter()
            .map(|(a, b)| (a.index, b.index))
            .collect();
        assert!(pairwise.len() > 50, "the patterns must overlap somewhere");
        assert_eq!(fast, pairwise);
    }

    #[test]
    fn ten_thousand_routes_match_and_report_overlaps() {
        let mut patterns: Vec<String> = (0..10_000)
            .map(|i| format!("GET /api/v{}/items{i}/:id", i % 7))
            .collect();
        patterns.push("GET /api/v3/items3/special".into());
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        let t = table(&refs);
        assert_eq!(
            winner(&t, "GET", "/api/v3/items9999/42").as_deref(),
            Some("GET /api/v3/items9999/:id")
        );
        assert_eq!(
            winner(&t, "GET", "/api/v3/items3/special").as_deref(),
            Some("GET /api/v3/items3/special")
        );
        assert_eq!(winner(&t, "GET", "/api/v2/items9999/42"), None);
        assert_eq!(t.get(10_000).map(|r| r.index), Some(10_000));
        assert_eq!(t.get(10_001).map(|r| r.index), None);
        let file_order: Vec<usize> = t.in_file_order().iter().map(|r| r.index).collect();
        assert_eq!(file_order, (0..=10_000).collect::<Vec<_>>());
        let pairs: Vec<(&str, &str)> = t
            .overlaps()
            .iter()
            .map(|(a, b)| (a.source.as_str(), b.source.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![("GET /api/v3/items3/special", "GET /api/v3/items3/:id")]
        );
    }

    #[test]
    fn priced_routes_for_some_methods_are_found_unless_a_star_route_covers_them() {
        let priced = || {
            RouteKind::Priced(PricedRoute {
                options: Vec::new(),
                description: String::new(),
                mime_type: String::new(),
                settle: SettlementPolicy::AfterSuccess,
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
        let patterns = [
            ("GET /a", true),
            ("GET /b/:id", true),
            ("* /b/**", false),
            ("POST /c/x", true),
            ("* /c/:id", true),
            ("* /d", true),
            ("GET /e", false),
        ];
        let t = RouteTable::new(
            patterns
                .iter()
                .enumerate()
                .map(|(index, (p, is_priced))| Route {
                    index,
                    source: p.to_string(),
                    pattern: RoutePattern::parse(p).unwrap(),
                    kind: if *is_priced {
                        priced()
                    } else {
                        RouteKind::Free
                    },
                })
                .collect(),
        );
        let found: Vec<&str> = t
            .priced_for_some_methods()
            .iter()
            .map(|r| r.source.as_str())
            .collect();
        assert_eq!(found, ["GET /a"]);
    }

    #[test]
    fn overlaps_are_reported_with_the_winner_first() {
        let t = table(&["GET /a/:id", "GET /a/new", "POST /a/new", "GET /b/x"]);
        let pairs: Vec<(String, String)> = t
            .overlaps()
            .iter()
            .map(|(a, b)| (a.source.clone(), b.source.clone()))
            .collect();
        assert_eq!(
            pairs,
            vec![("GET /a/new".to_string(), "GET /a/:id".to_string())]
        );
    }
}
