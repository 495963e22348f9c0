//! The validated configuration the gateway runs on: what every part reads, with no trace of the
//! file format and no secret in its `Debug` output.

use crate::pricing::{AssetRegistry, RouteTable};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A configuration problem, located in the file when it comes from one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// A credential from the configuration; printed as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub threads: usize,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Public base URL (scheme and host) used to build absolute resource URLs.
    pub public_url: Option<String>,
    pub grace_period: Duration,
    /// How requests are normalised before pricing (`method_override`, `drop_underscore_headers`).
    pub requests: crate::pricing::RequestRules,
    /// Whether clients may speak HTTP/2 (ALPN `h2` with TLS, prior-knowledge h2c without).
    pub http2: bool,
    /// The largest paid answer of known length received whole before it is settled, in bytes
    /// (0: every answer is settled on its head and streams); a route may set its own.
    pub settle_buffer: u64,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// The `Host` header the upstream expects (`host` or `host:port`).
    pub host_header: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Whether requests go to the upstream over HTTP/2 (ALPN `h2` preferred over HTTP/1.1 with
    /// TLS; prior-knowledge h2c over plain TCP, so the upstream must speak it).
    pub http2: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FacilitatorKind {
    /// A standard x402 facilitator over HTTP.
    X402,
    /// In-process test mode: every check, no money moves.
    Local,
    /// OKX Onchain OS Payment.
    Okx,
    /// AgentWallex.
    AgentWallex,
}

impl FacilitatorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X402 => "x402",
            Self::Local => "local",
            Self::Okx => "okx",
            Self::AgentWallex => "agentwallex",
        }
    }
}

/// Which generation of OKX's x402 API to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OkxApi {
    /// `/api/v6/pay/x402/*` with standard x402 v2 bodies.
    V2,
    /// `/api/v6/x402/*` with `chainIndex` and v1 requirements.
    Legacy,
}

/// OKX credentials and settlement settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OkxSettings {
    pub api: OkxApi,
    pub api_key: Secret,
    pub secret_key: Secret,
    pub passphrase: Secret,
    /// How long a settlement answered with `timeout` is polled on `/settle/status`.
    pub settle_poll_deadline: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentWallexSettings {
    pub api_key: Secret,
    pub sandbox: bool,
}

pub const OKX_DEFAULT_URL: &str = "https://web3.okx.com";
pub const AGENTWALLEX_URL: &str = "https://api.agentwallex.com/api/v1";
pub const AGENTWALLEX_SANDBOX_URL: &str = "https://api-sandbox.agentwallex.com/api/v1";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacilitatorConfig {
    /// `name` of a `[[facilitators]]` entry; the kind for a single `[facilitator]`.
    pub name: String,
    pub kind: FacilitatorKind,
    /// Base URL; set for every kind but `local` (vendor kinds have defaults).
    pub url: Option<String>,
    pub bearer_token: Option<Secret>,
    pub timeout: Duration,
    /// Networks served; empty means every network (a single `[facilitator]`).
    pub networks: Vec<String>,
    /// Name of the facilitator tried when this one is down during `/verify`, or cannot be reached
    /// at all for the `/settle` of a `settle = "before"` route.
    pub fallback: Option<String>,
    pub okx: Option<OkxSettings>,
    pub agentwallex: Option<AgentWallexSettings>,
}

impl FacilitatorConfig {
    pub fn serves(&self, network: &str) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|n| n == network)
    }
}

/// Facilitators listing `network` that are not the fallback of another one listing it.
pub(super) fn primaries_for<'a>(
    facilitators: &'a [FacilitatorConfig],
    network: &'a str,
) -> impl Iterator<Item = usize> + 'a {
    facilitators.iter().enumerate().filter_map(move |(i, f)| {
        let is_fallback = facilitators.iter().any(|other| {
            other.name != f.name
                && other.serves(network)
                && other.fallback.as_deref() == Some(f.name.as_str())
        });
        (f.serves(network) && !is_fallback).then_some(i)
    })
}

/// The index of the facilitator that serves `network` first (validated to be unique).
pub fn primary_facilitator(facilitators: &[FacilitatorConfig], network: &str) -> Option<usize> {
    primaries_for(facilitators, network).next()
}

/// The operator's listener: health, readiness, metrics, the admin API and the console, never the
/// public API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// How often each facilitator is probed; readiness needs an answer within three intervals.
    pub probe_interval: Duration,
    /// The bearer token the admin API asks for; without it the API answers loopback peers only.
    pub token: Option<Secret>,
    /// Transaction explorer URL prefixes by CAIP-2 network (the transaction hash is appended):
    /// the built-in ones ([`DEFAULT_EXPLORERS`]) with the configured ones over them.
    pub explorers: std::collections::BTreeMap<String, String>,
}

/// Explorers known without configuration: Base, Base Sepolia and X Layer.
pub const DEFAULT_EXPLORERS: &[(&str, &str)] = &[
    ("eip155:8453", "https://basescan.org/tx/"),
    ("eip155:84532", "https://sepolia.basescan.org/tx/"),
    ("eip155:196", "https://www.oklink.com/xlayer/tx/"),
];

impl AdminConfig {
    /// The explorer page of `transaction` on `network`, when an explorer is known for it.
    pub fn explorer_url(&self, network: &str, transaction: &str) -> Option<String> {
        let is_hash = transaction.len() > 2
            && transaction.starts_with("0x")
            && transaction[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !is_hash {
            return None;
        }
        self.explorers
            .get(network)
            .map(|prefix| format!("{prefix}{transaction}"))
    }
}

/// The settlement journal: where every payment is recorded before the response depending on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The journal file; with `url`, the local spool for records the database could not take.
    pub path: PathBuf,
    /// A PostgreSQL connection URL (`postgres://user:password@host:port/database`): the journal
    /// every replica shares.
    pub url: Option<Secret>,
    /// How often pending settlements are checked with their facilitator.
    pub reconcile_interval: Duration,
}

/// The Redis that replicas share. The URL may hold a password, so it is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub url: Secret,
    /// Prepended to every key, so several gateways can share one Redis.
    pub key_prefix: String,
    /// How long one Redis operation may take before the gateway treats Redis as unavailable.
    pub timeout: Duration,
}

impl RedisConfig {
    /// The URL with any password replaced by `***`, for logs and `check`.
    pub fn display_url(&self) -> String {
        redacted_url(self.url.expose())
    }
}

/// Whom a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePer {
    /// The address the connection comes from (not `X-Forwarded-For`, which a client can write).
    ClientIp,
    /// The payer of a payment (its authorization's `from`), once checked locally.
    Payer,
}

/// Requests per window for one kind of client, on challenges, paid requests or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub per: RatePer,
    pub requests: u64,
    pub window: Duration,
    pub challenges: bool,
    pub paid: bool,
    /// Route indexes (file order) it covers; empty means every priced route.
    pub routes: Vec<usize>,
}

impl RateLimitConfig {
    pub fn covers(&self, route_index: usize) -> bool {
        self.routes.is_empty() || self.routes.contains(&route_index)
    }
}

/// Idempotent retries (`payment-identifier`): how long and how much of a response is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyConfig {
    pub ttl: Duration,
    pub max_body_bytes: usize,
}

/// `url` without its password (and without its user name when only that is set as a password).
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            } else if !parsed.username().is_empty() {
                // `redis://secret@host` carries a password in the user name position.
                let _ = parsed.set_username("***");
            }
            parsed.to_string()
        }
        Err(_) => "(unreadable url)".to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmatchedPolicy {
    Proxy,
    Deny,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub source: PathBuf,
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    /// In file order; see [`primary_facilitator`] for which one serves a network.
    pub facilitators: Vec<FacilitatorConfig>,
    pub routes: RouteTable,
    pub unmatched: UnmatchedPolicy,
    pub assets: AssetRegistry,
    pub admin: AdminConfig,
    pub journal: Option<JournalConfig>,
    /// Whether `GET /.well-known/x402` lists the priced routes.
    pub discovery: bool,
    /// Shared state for replicas; without it every process keeps its own.
    pub redis: Option<RedisConfig>,
    pub idempotency: IdempotencyConfig,
    /// In file order; counters are shared through `[redis]` when configured.
    pub rate_limits: Vec<RateLimitConfig>,
    /// The claim job of `batch-settlement` routes.
    pub batch: BatchConfig,
}

/// `[batch]`: when the charges kept on `batch-settlement` channels are claimed on chain and swept
/// to `pay_to`. Charges not yet claimed are the gateway's exposure: a buyer may withdraw what the
/// chain does not know was spent once the withdraw delay has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    pub claim_interval: Duration,
    /// Claim early once this many atomic units are charged and unclaimed.
    pub claim_threshold: Option<u128>,
    /// The gateway's own receiver-authorizer key; without it the facilitator named by its
    /// `/supported` signs claims and refunds.
    pub receiver_authorizer_key: Option<Secret>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            claim_interval: Duration::from_secs(300),
            claim_threshold: None,
            receiver_authorizer_key: None,
        }
    }
}
