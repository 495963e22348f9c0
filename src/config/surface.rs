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
    /// `batch-settlement` channels: when the charges kept are claimed on chain.
    #[serde(default)]
    pub batch: Batch,
}

/// `[batch]`: the claim job of `batch-settlement` routes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// How often charged vouchers are claimed and swept to `pay_to` (`"5m"`).
    pub claim_interval: Option<Text>,
    /// Claim as soon as this many atomic units are charged and unclaimed, across channels.
    pub claim_threshold: Option<Text>,
    /// Who authorizes claims and refunds: `"facilitator"` (the facilitator's address from its
    /// `/supported`; it signs for the gateway).
    pub receiver_authorizer: Option<Text>,
    /// The gateway's own receiver-authorizer private key (a secret, `${env:...}`): it signs the
    /// gateway's claims and refunds itself.
    pub receiver_authorizer_key: Option<Text>,
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
    /// The bearer token of the admin API and console (a secret).
    pub token: Option<Text>,
    /// Transaction explorer URL prefixes by CAIP-2 network, for the console's links.
    #[serde(default)]
    pub explorers: BTreeMap<String, Text>,
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
    /// Also speak HTTP/2 to clients: ALPN `h2` with TLS, prior-knowledge h2c without.
    pub http2: Option<bool>,
    /// The largest paid answer of known length received whole before it is settled (`"1MiB"`).
    pub settle_buffer: Option<Spanned<Size>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub url: Text,
    pub connect_timeout: Option<Text>,
    pub read_timeout: Option<Text>,
    pub idle_timeout: Option<Text>,
    /// Reach the upstream over HTTP/2: ALPN `h2` (then HTTP/1.1) with https, h2c without.
    pub http2: Option<bool>,
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
    /// `"facilitator"` (default) or `"local"`: whether `/verify` is asked before the upstream.
    pub verify: Option<Text>,
    pub sync_settle: Option<Spanned<bool>>,
    /// List every priced route (and MCP tool) in the Bazaar unless it says `discoverable = false`.
    pub discoverable: Option<Spanned<bool>>,
    /// Catalog fields of every listed route that sets none of its own.
    pub service_name: Option<Text>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub icon_url: Option<Text>,
}

/// A JSON document written as an inline TOML table or as a JSON string.
pub type Document = Spanned<toml::Value>;

/// The Bazaar keys of a route or an MCP tool: whether it is listed, what a call sends and gets
/// back, and how catalogs show it.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    pub discoverable: Option<Spanned<bool>>,
    /// JSON Schema of the query parameters (GET, HEAD, DELETE), the body (POST, PUT, PATCH) or
    /// an MCP tool's arguments.
    pub input_schema: Option<Document>,
    /// Example query parameters, body or tool arguments.
    pub input_example: Option<Document>,
    /// JSON Schema of the response (with `output_example`).
    pub output_schema: Option<Document>,
    /// Example response (a JSON object).
    pub output_example: Option<Document>,
    /// `"json"` (default), `"form-data"` or `"text"`: how a body route's body is encoded.
    pub body_type: Option<Text>,
    pub service_name: Option<Text>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub icon_url: Option<Text>,
}

impl Listing {
    /// The keys set, other than `discoverable`, by name.
    pub fn set_keys(&self) -> Vec<&'static str> {
        [
            ("input_schema", self.input_schema.is_some()),
            ("input_example", self.input_example.is_some()),
            ("output_schema", self.output_schema.is_some()),
            ("output_example", self.output_example.is_some()),
            ("body_type", self.body_type.is_some()),
            ("service_name", self.service_name.is_some()),
            ("tags", self.tags.is_some()),
            ("icon_url", self.icon_url.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
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
    /// `batch-settlement`: how long a buyer's withdrawal waits (`"15m"` to `"720h"`).
    pub withdraw_delay: Option<Text>,
    /// `batch-settlement`: the deposit buyers are asked for (`"$0.10"`, or atomic units).
    pub min_deposit: Option<Text>,
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
    /// `"facilitator"` (default) or `"local"`: whether `/verify` is asked before the upstream.
    pub verify: Option<Text>,
    pub sync_settle: Option<Spanned<bool>>,
    pub accepts: Option<Vec<Spanned<PaymentTerms>>>,
    pub price: Option<Text>,
    pub amount: Option<Text>,
    pub asset: Option<Text>,
    pub network: Option<Text>,
    pub pay_to: Option<Text>,
    pub scheme: Option<Text>,
    pub max_timeout_seconds: Option<Spanned<u64>>,
    /// `batch-settlement`: how long a buyer's withdrawal waits (`"15m"` to `"720h"`).
    pub withdraw_delay: Option<Text>,
    /// `batch-settlement`: the deposit buyers are asked for (`"$0.10"`, or atomic units).
    pub min_deposit: Option<Text>,
    /// Other prices for some requests (`[[routes.price_rules]]`).
    pub price_rules: Option<Vec<Spanned<PriceRule>>>,
    /// The route is an MCP server's Streamable HTTP endpoint, priced per tool, resource, prompt.
    #[serde(default)]
    pub mcp: bool,
    pub tools: Option<Vec<Spanned<McpEntry>>>,
    pub resources: Option<Vec<Spanned<McpEntry>>>,
    pub prompts: Option<Vec<Spanned<McpEntry>>>,
    /// Metered (`scheme = "upto"`) routes: a response header carrying the units used ...
    pub usage_header: Option<Text>,
    /// ... each costing this much (`"$0.0001"`) ...
    pub unit_price: Option<Text>,
    /// ... or this many atomic units.
    pub unit_amount: Option<Text>,
    /// A response header carrying the amount itself, in atomic units.
    pub amount_header: Option<Text>,
    /// A dotted path to the units used in the JSON body (or the last server-sent event),
    /// priced per unit like `usage_header`: `"usage.total_tokens"`.
    pub usage_json: Option<Text>,
    /// `"maximum"` (default) or `"nothing"`: the charge when the report is missing or unreadable.
    pub usage_fallback: Option<Text>,
    /// How long a settled payment gives its payer access by signing in (`"24h"`).
    pub access: Option<Text>,
    /// Listed in the Bazaar: its challenges declare the `bazaar` extension.
    pub discoverable: Option<Spanned<bool>>,
    /// JSON Schema of the query parameters (GET, HEAD, DELETE), the body (POST, PUT, PATCH) or
    /// an MCP tool's arguments.
    pub input_schema: Option<Document>,
    /// Example query parameters, body or tool arguments.
    pub input_example: Option<Document>,
    /// JSON Schema of the response (with `output_example`).
    pub output_schema: Option<Document>,
    /// Example response (a JSON object).
    pub output_example: Option<Document>,
    pub service_name: Option<Text>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub icon_url: Option<Text>,
    /// `"json"` (default), `"form-data"` or `"text"`: how a body route's body is encoded.
    pub body_type: Option<Text>,
    /// This route's bound of an answer received whole before it is settled (`[server]`'s).
    pub settle_buffer: Option<Spanned<Size>>,
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
    /// Listed in the Bazaar: its challenges declare the `bazaar` extension.
    pub discoverable: Option<Spanned<bool>>,
    /// JSON Schema of the query parameters (GET, HEAD, DELETE), the body (POST, PUT, PATCH) or
    /// an MCP tool's arguments.
    pub input_schema: Option<Document>,
    /// Example query parameters, body or tool arguments.
    pub input_example: Option<Document>,
    /// JSON Schema of the response (with `output_example`).
    pub output_schema: Option<Document>,
    /// Example response (a JSON object).
    pub output_example: Option<Document>,
    pub service_name: Option<Text>,
    pub tags: Option<Spanned<Vec<String>>>,
    pub icon_url: Option<Text>,
}

/// A size: whole bytes (`1048576`) or a number with a unit (`"1MiB"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Size {
    Bytes(u64),
    Text(String),
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
    /// The Bazaar listing keys of the route.
    pub fn listing(&self) -> Listing {
        Listing {
            discoverable: self.discoverable.clone(),
            input_schema: self.input_schema.clone(),
            input_example: self.input_example.clone(),
            output_schema: self.output_schema.clone(),
            output_example: self.output_example.clone(),
            body_type: self.body_type.clone(),
            service_name: self.service_name.clone(),
            tags: self.tags.clone(),
            icon_url: self.icon_url.clone(),
        }
    }
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
            withdraw_delay: self.withdraw_delay.clone(),
            min_deposit: self.min_deposit.clone(),
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
            ("withdraw_delay", self.withdraw_delay.is_some()),
            ("min_deposit", self.min_deposit.is_some()),
            ("settle", self.settle.is_some()),
            ("sync_settle", self.sync_settle.is_some()),
            ("settle_buffer", self.settle_buffer.is_some()),
            ("description", self.description.is_some()),
            ("mime_type", self.mime_type.is_some()),
            ("price_rules", self.price_rules.is_some()),
            ("access", self.access.is_some()),
            ("discoverable", self.discoverable.is_some()),
        ]
        .into_iter()
        .chain(self.metering_keys())
        .filter_map(|(key, set)| set.then_some(key))
        .chain(self.listing().set_keys())
        .collect()
    }

    /// The metering keys (metered `upto` routes only), with whether each is set.
    pub fn metering_keys(&self) -> [(&'static str, bool); 6] {
        [
            ("usage_header", self.usage_header.is_some()),
            ("usage_json", self.usage_json.is_some()),
            ("unit_price", self.unit_price.is_some()),
            ("unit_amount", self.unit_amount.is_some()),
            ("amount_header", self.amount_header.is_some()),
            ("usage_fallback", self.usage_fallback.is_some()),
        ]
    }
}

impl McpEntry {
    /// The Bazaar listing keys of the entry.
    pub fn listing(&self) -> Listing {
        Listing {
            discoverable: self.discoverable.clone(),
            input_schema: self.input_schema.clone(),
            input_example: self.input_example.clone(),
            output_schema: self.output_schema.clone(),
            output_example: self.output_example.clone(),
            body_type: None,
            service_name: self.service_name.clone(),
            tags: self.tags.clone(),
            icon_url: self.icon_url.clone(),
        }
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
            withdraw_delay: self
                .withdraw_delay
                .clone()
                .or_else(|| route.withdraw_delay.clone()),
            min_deposit: self.min_deposit.clone(),
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
