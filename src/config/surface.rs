//! The `gateway.toml` file as written: every key an operator may set, nothing validated yet.
//! Unknown keys are errors so that a typo never silently drops a price.

use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

pub type Text = Spanned<String>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    pub upstream: Option<Spanned<Upstream>>,
    pub facilitator: Option<Spanned<Facilitator>>,
    /// Several facilitators chosen by network, instead of one `[facilitator]`.
    pub facilitators: Option<Vec<Spanned<Facilitator>>>,
    #[serde(default)]
    pub defaults: Defaults,
    #[serde(default)]
    pub routes: Vec<Spanned<Route>>,
    pub unmatched: Option<Text>,
    #[serde(default)]
    pub assets: BTreeMap<String, BTreeMap<String, Spanned<Asset>>>,
    #[serde(default)]
    pub admin: Admin,
    pub journal: Option<Spanned<Journal>>,
    #[serde(default)]
    pub discovery: Discovery,
    /// Shared state for replicas: replay reservations, idempotent replies, rate limits.
    pub redis: Option<Spanned<Redis>>,
    #[serde(default)]
    pub idempotency: Idempotency,
    #[serde(default)]
    pub rate_limits: Vec<Spanned<RateLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// `"ip"` or `"payer"`.
    pub per: Text,
    pub requests: Spanned<u64>,
    pub window: Text,
    /// `"challenges"`, `"paid"` or `"all"` (the default).
    pub applies_to: Option<Text>,
    /// `match` strings of the routes it covers; every priced route when absent.
    pub routes: Option<Spanned<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Idempotency {
    pub ttl: Option<Text>,
    pub max_body_bytes: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    pub url: Text,
    pub key_prefix: Option<Text>,
    pub timeout: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<Text>,
    pub probe_interval: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub path: Option<Text>,
    pub url: Option<Text>,
    pub reconcile_interval: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<Text>,
    pub threads: Option<Spanned<usize>>,
    pub cert: Option<Text>,
    pub key: Option<Text>,
    pub public_url: Option<Text>,
    pub grace_period: Option<Text>,
    pub method_override: Option<Text>,
    pub drop_underscore_headers: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: Text,
    pub connect_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facilitator {
    pub name: Option<Text>,
    pub kind: Option<Text>,
    pub url: Option<Text>,
    pub bearer_token: Option<Text>,
    pub timeout: Option<Text>,
    pub networks: Option<Spanned<Vec<String>>>,
    pub fallback: Option<Text>,
    /// OKX: `"v2"` (current API) or `"legacy"`.
    pub api: Option<Text>,
    pub api_key: Option<Text>,
    pub secret_key: Option<Text>,
    pub passphrase: Option<Text>,
    /// OKX: how long a `timeout` settlement is polled before giving up.
    pub settle_poll_deadline: Option<Text>,
    /// AgentWallex: `"production"` or `"sandbox"`.
    pub environment: Option<Text>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    pub pay_to: Option<Text>,
    pub network: Option<Text>,
    pub scheme: Option<Text>,
    pub asset: Option<Text>,
    pub max_timeout_seconds: Option<Spanned<u64>>,
    pub settle: Option<Text>,
    pub sync_settle: Option<Spanned<bool>>,
}

/// Where a route or an option takes its money: every key optional, defaults fill the gaps.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentTerms {
    pub price: Option<Text>,
    pub amount: Option<Text>,
    pub asset: Option<Text>,
    pub network: Option<Text>,
    pub pay_to: Option<Text>,
    pub scheme: Option<Text>,
    pub max_timeout_seconds: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(rename = "match")]
    pub pattern: Text,
    #[serde(default)]
    pub free: bool,
    pub description: Option<Text>,
    pub mime_type: Option<Text>,
    pub settle: Option<Text>,
    pub sync_settle: Option<Spanned<bool>>,
    pub accepts: Option<Vec<Spanned<PaymentTerms>>>,
    pub price: Option<Text>,
    pub amount: Option<Text>,
    pub asset: Option<Text>,
    pub network: Option<Text>,
    pub pay_to: Option<Text>,
    pub scheme: Option<Text>,
    pub max_timeout_seconds: Option<Spanned<u64>>,
    /// Other prices for some requests (`[[routes.price_rules]]`).
    pub price_rules: Option<Vec<Spanned<PriceRule>>>,
    /// The route is an MCP server's Streamable HTTP endpoint, priced per tool, resource, prompt.
    #[serde(default)]
    pub mcp: bool,
    pub tools: Option<Vec<Spanned<McpEntry>>>,
    pub resources: Option<Vec<Spanned<McpEntry>>>,
    pub prompts: Option<Vec<Spanned<McpEntry>>>,
}

/// `[[routes.tools]]` (`name`), `[[routes.resources]]` (`uri`), `[[routes.prompts]]` (`name`):
/// a priced item of an MCP route, with the usual price keys; the route's keys are its defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpEntry {
    pub name: Option<Text>,
    pub uri: Option<Text>,
    pub description: Option<Text>,
    pub mime_type: Option<Text>,
    pub settle: Option<Text>,
    pub sync_settle: Option<Spanned<bool>>,
    pub accepts: Option<Vec<Spanned<PaymentTerms>>>,
    pub price: Option<Text>,
    pub amount: Option<Text>,
    pub asset: Option<Text>,
    pub network: Option<Text>,
    pub pay_to: Option<Text>,
    pub scheme: Option<Text>,
    pub max_timeout_seconds: Option<Spanned<u64>>,
}

/// One value or a list of values: `equals = "pro"` or `equals = ["pro", "max"]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(v) => vec![v],
            Self::Many(v) => v,
        }
    }
}

/// `[[routes.price_rules]]`: what to look at (one of `query`, `header`, `path_param`,
/// `body_over`), which values (`equals`, absent for "present at all"), and the price.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRule {
    pub query: Option<Text>,
    pub header: Option<Text>,
    pub path_param: Option<Text>,
    pub equals: Option<OneOrMany>,
    /// Bytes of request body (from `Content-Length`).
    pub body_over: Option<Spanned<u64>>,
    pub price: Option<Text>,
    pub amount: Option<Text>,
}

impl Route {
    /// The single payment option written directly on the route.
    pub fn inline_terms(&self) -> PaymentTerms {
        PaymentTerms {
            price: self.price.clone(),
            amount: self.amount.clone(),
            asset: self.asset.clone(),
            network: self.network.clone(),
            pay_to: self.pay_to.clone(),
            scheme: self.scheme.clone(),
            max_timeout_seconds: self.max_timeout_seconds.clone(),
        }
    }

    pub fn has_inline_terms(&self) -> bool {
        self.price.is_some() || self.amount.is_some()
    }

    /// The keys set on the route that only a priced route reads (its challenge and payment).
    pub fn payment_keys(&self) -> Vec<&'static str> {
        [
            ("asset", self.asset.is_some()),
            ("network", self.network.is_some()),
            ("pay_to", self.pay_to.is_some()),
            ("scheme", self.scheme.is_some()),
            ("max_timeout_seconds", self.max_timeout_seconds.is_some()),
            ("settle", self.settle.is_some()),
            ("sync_settle", self.sync_settle.is_some()),
            ("description", self.description.is_some()),
            ("mime_type", self.mime_type.is_some()),
            ("price_rules", self.price_rules.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

impl PaymentTerms {
    /// These terms with the route's own keys filling what the entry leaves unset (the price
    /// stays the entry's).
    pub fn or_route(&self, route: &Route) -> Self {
        Self {
            price: self.price.clone(),
            amount: self.amount.clone(),
            asset: self.asset.clone().or_else(|| route.asset.clone()),
            network: self.network.clone().or_else(|| route.network.clone()),
            pay_to: self.pay_to.clone().or_else(|| route.pay_to.clone()),
            scheme: self.scheme.clone().or_else(|| route.scheme.clone()),
            max_timeout_seconds: self
                .max_timeout_seconds
                .clone()
                .or_else(|| route.max_timeout_seconds.clone()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub address: Text,
    pub decimals: u8,
    pub name: Text,
    pub version: Text,
}
