//! From the surface format to the validated model: every key is checked against every other,
//! and every problem names the file, line and column.

use super::duration::parse_duration;
use super::model::*;
use super::surface;
use super::surface::Text;
use crate::payment::batch::{
    ReceiverAuthorizerKey, BATCH_SETTLEMENT, MAX_WITHDRAW_DELAY_SECS, MIN_DEPOSIT_KEY,
    MIN_WITHDRAW_DELAY_SECS, RECEIVER_AUTHORIZER_KEY, WITHDRAW_DELAY_KEY,
};
use crate::payment::{upto_challenge_extra, SettlementPolicy, PAYMENT_FLOW};
use crate::pricing::mcp::{McpItemKind, McpPricedItem, McpRoute};
use crate::pricing::{
    canonical_path, checksum_address, parse_price, Asset, AssetRegistry, Meter, Metering,
    PaymentOption, PriceCondition, PriceRule, PricedRoute, Route, RouteKind, RoutePattern,
    RouteTable, UsageFallback, UsageHeader, UsageJson, UsagePath, VerifyPolicy,
};
use crate::x402::{chain_id_of, v1_name_of, PaymentRequirements, EXACT, UPTO};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

#[path = "listing.rs"]
mod listing;
use listing::Listed;

impl GatewayConfig {
    /// Reads and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            location: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Validates `text` as if read from `path`, looking `${VARS}` up with `env`.
    pub fn parse(
        text: &str,
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let ctx = Ctx {
            text,
            file: path.display().to_string(),
            env,
        };
        let file: surface::File = toml::from_str(text).map_err(|e| ConfigError {
            file: ctx.file.clone(),
            location: e.span().map(|s| ctx.line_col(s.start)),
            message: e.message().trim().to_string(),
        })?;
        ctx.build(file, path)
    }
}

/// Payment schemes a route may ask for. `aggr_deferred` is OKX's batch settlement.
/// `upto` is metered: the price is a maximum and the charge is read from the response.
const SCHEMES: &[&str] = &["exact", "aggr_deferred", "upto", BATCH_SETTLEMENT];

struct Ctx<'a> {
    text: &'a str,
    file: String,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Ctx<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(before.chars().count(), |nl| {
            before[nl + 1..].chars().count()
        }) + 1;
        (line, column)
    }

    fn error_at(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            location: Some(self.line_col(span.start)),
            message: message.into(),
        }
    }

    fn err<T>(&self, at: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.error_at(at.span(), message)
    }

    fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            location: None,
            message: message.into(),
        }
    }

    /// The value of a string key with `${VAR}` references replaced; a missing variable is an error.
    fn expand(&self, value: &Text) -> Result<String, ConfigError> {
        let raw = value.get_ref();
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| self.err(value, "unterminated `${` in value"))?;
            let name = &after[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(
                    value,
                    format!("`${{{name}}}` is not an environment variable reference"),
                ));
            }
            let resolved = (self.env)(name).ok_or_else(|| {
                self.err(value, format!("environment variable `{name}` is not set"))
            })?;
            out.push_str(&resolved);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn opt(&self, value: &Option<Text>) -> Result<Option<String>, ConfigError> {
        value.as_ref().map(|v| self.expand(v)).transpose()
    }

    fn duration(&self, value: &Option<Text>, default: Duration) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(&self.expand(v)?).map_err(|e| self.err(v, e)),
        }
    }

    fn build(&self, file: surface::File, path: &Path) -> Result<GatewayConfig, ConfigError> {
        let server = self.server(&file.server, path)?;
        let upstream = file.upstream.as_ref().ok_or_else(|| {
            self.error("missing `[upstream]` table with the `url` of the API to protect")
        })?;
        let upstream = self.upstream(upstream)?;
        let facilitators = self.facilitators(&file)?;
        let mut assets = AssetRegistry::with_built_ins();
        for (network, symbols) in &file.assets {
            for (symbol, asset) in symbols {
                let address = self.expand(&asset.get_ref().address)?;
                let address = checksum_address(&address).ok_or_else(|| {
                    self.err(
                        &asset.get_ref().address,
                        format!("`{address}` is not a 0x-prefixed 20-byte address"),
                    )
                })?;
                if chain_id_of(network).is_none() || !network.starts_with("eip155:") {
                    return Err(self.err(
                        asset,
                        format!("asset network `{network}` is not an `eip155:<chain id>` network"),
                    ));
                }
                assets.insert(Asset {
                    network: network.clone(),
                    symbol: symbol.clone(),
                    address,
                    decimals: asset.get_ref().decimals,
                    name: self.expand(&asset.get_ref().name)?,
                    version: self.expand(&asset.get_ref().version)?,
                });
            }
        }
        let defaults = &file.defaults;
        let default_settle = match &defaults.settle {
            Some(s) => self.settle_policy(s)?,
            None => SettlementPolicy::AfterSuccess,
        };
        let mut routes = Vec::with_capacity(file.routes.len());
        for (index, route) in file.routes.iter().enumerate() {
            let built = self.route(index, route, defaults, default_settle, &assets)?;
            // Sign-in messages name the gateway's public URL; the request's own `Host` or
            // `X-Forwarded-*` would let a client choose the domain it signs in to.
            if let (Some(access), None) = (&route.get_ref().access, &server.public_url) {
                return Err(self.err(
                    access,
                    format!("route `{}`: `access` needs `[server] public_url`, the address buyers sign in to", built.source),
                ));
            }
            self.check_route_facilitators(route, &built, &facilitators)?;
            routes.push(built);
        }
        let unmatched = match &file.unmatched {
            None => UnmatchedPolicy::Proxy,
            Some(v) => match self.expand(v)?.as_str() {
                "proxy" => UnmatchedPolicy::Proxy,
                "deny" => UnmatchedPolicy::Deny,
                other => {
                    return Err(self.err(
                        v,
                        format!("unmatched = `{other}`: expected \"proxy\" or \"deny\""),
                    ))
                }
            },
        };
        let admin = self.admin(&file.admin)?;
        let journal = match &file.journal {
            None => None,
            Some(j) => Some(self.journal(j.get_ref(), path)?),
        };
        let batch = self.batch(&file.batch, &routes)?;
        let own_authorizer = batch
            .receiver_authorizer_key
            .as_ref()
            .and_then(|k| ReceiverAuthorizerKey::from_hex(k.expose()).ok())
            .map(|k| k.address());
        let mut config = GatewayConfig {
            batch,
            source: path.to_path_buf(),
            server,
            upstream,
            facilitators,
            rate_limits: self.rate_limits(&file.rate_limits, &routes)?,
            routes: RouteTable::new(routes),
            unmatched,
            assets,
            admin,
            journal,
            discovery: file.discovery.enabled.unwrap_or(true),
            redis: file.redis.as_ref().map(|r| self.redis(r)).transpose()?,
            idempotency: IdempotencyConfig {
                ttl: self.positive_duration(&file.idempotency.ttl, Duration::from_secs(600))?,
                max_body_bytes: match &file.idempotency.max_body_bytes {
                    None => 256 * 1024,
                    Some(n) if *n.get_ref() > 16 * 1024 * 1024 => {
                        return Err(self.err(n, "max_body_bytes must be at most 16777216 (16 MiB)"))
                    }
                    Some(n) => *n.get_ref(),
                },
            },
        };
        if let Some(address) = own_authorizer {
            // Channels name the gateway's own key: no facilitator is asked for one.
            config.routes.complete_options(|option| {
                if option.requirements.scheme == BATCH_SETTLEMENT {
                    if let Some(map) = option.requirements.extra.as_object_mut() {
                        map.insert(RECEIVER_AUTHORIZER_KEY.into(), serde_json::json!(address));
                    }
                }
            });
        }
        Ok(config)
    }

    /// `[batch]`, checked against the routes' withdraw delays: a claim must land well inside the
    /// shortest one, or a buyer could withdraw what was charged but not yet claimed.
    fn batch(&self, b: &surface::Batch, routes: &[Route]) -> Result<BatchConfig, ConfigError> {
        let defaults = BatchConfig::default();
        let claim_interval = self.positive_duration(&b.claim_interval, defaults.claim_interval)?;
        let claim_threshold = match &b.claim_threshold {
            None => None,
            Some(text) => {
                let value = self.expand(text)?;
                match value.parse::<u128>() {
                    Ok(n) if n > 0 && value.bytes().all(|c| c.is_ascii_digit()) => Some(n),
                    _ => {
                        return Err(self.err(
                            text,
                            format!("claim_threshold `{value}` is not a positive whole number of atomic units"),
                        ))
                    }
                }
            }
        };
        if let Some(text) = &b.receiver_authorizer {
            let value = self.expand(text)?;
            if value != "facilitator" {
                return Err(self.err(
                    text,
                    format!("receiver_authorizer `{value}`: only \"facilitator\" is named here (the facilitator from its /supported signs claims and refunds); for the gateway's own key set receiver_authorizer_key"),
                ));
            }
            if let Some(key) = &b.receiver_authorizer_key {
                return Err(self.err(
                    key,
                    "[batch] sets both receiver_authorizer = \"facilitator\" and receiver_authorizer_key: use one",
                ));
            }
        }
        let receiver_authorizer_key = self.secret(&b.receiver_authorizer_key)?;
        if let (Some(key), Some(text)) = (&receiver_authorizer_key, &b.receiver_authorizer_key) {
            // Checked here so that a bad key stops the start, never a claim hours later; the
            // message never shows the value.
            ReceiverAuthorizerKey::from_hex(key.expose())
                .map_err(|e| self.err(text, e.to_string()))?;
        }
        let shortest = routes
            .iter()
            .flat_map(|r| r.kind.priced_routes())
            .flat_map(|p| &p.options)
            .filter(|o| o.requirements.scheme == BATCH_SETTLEMENT)
            .filter_map(|o| o.requirements.extra.get(WITHDRAW_DELAY_KEY)?.as_u64())
            .min();
        if let Some(delay) = shortest {
            if claim_interval.as_secs().saturating_mul(3) > delay {
                let at = b
                    .claim_interval
                    .as_ref()
                    .map(|v| v.span())
                    .unwrap_or_default();
                return Err(self.error_at(
                    at,
                    format!("[batch] claim_interval must be at most a third of the shortest withdraw_delay ({delay}s), so that every charge is claimed before a buyer can withdraw it"),
                ));
            }
        }
        Ok(BatchConfig {
            claim_interval,
            claim_threshold,
            receiver_authorizer_key,
        })
    }

    fn rate_limits(
        &self,
        limits: &[Spanned<surface::RateLimit>],
        routes: &[Route],
    ) -> Result<Vec<RateLimitConfig>, ConfigError> {
        let mut built = Vec::with_capacity(limits.len());
        for spanned in limits {
            let l = spanned.get_ref();
            let per = match self.expand(&l.per)?.as_str() {
                "ip" => RatePer::ClientIp,
                "payer" => RatePer::Payer,
                other => {
                    return Err(self.err(
                        &l.per,
                        format!("per = `{other}`: expected \"ip\" or \"payer\""),
                    ))
                }
            };
            let (challenges, paid) = match &l.applies_to {
                None => (true, true),
                Some(v) => match self.expand(v)?.as_str() {
                    "all" => (true, true),
                    "challenges" => (true, false),
                    "paid" => (false, true),
                    other => {
                        return Err(self.err(
                            v,
                            format!(
                            "applies_to = `{other}`: expected \"challenges\", \"paid\" or \"all\""
                        ),
                        ))
                    }
                },
            };
            if per == RatePer::Payer && !paid {
                return Err(self.err(spanned, "a challenge has no payer yet: per = \"payer\" needs applies_to = \"paid\" or \"all\""));
            }
            if *l.requests.get_ref() == 0 {
                return Err(self.err(&l.requests, "requests must be at least 1"));
            }
            let window = self.duration(&Some(l.window.clone()), Duration::ZERO)?;
            if window < Duration::from_secs(1) {
                return Err(self.err(&l.window, "window must be at least 1s"));
            }
            let mut covered = Vec::new();
            for name in l
                .routes
                .as_ref()
                .map(|r| r.get_ref().as_slice())
                .unwrap_or_default()
            {
                let route = routes.iter().find(|r| &r.source == name).ok_or_else(|| {
                    self.err(
                        spanned,
                        format!(
                            "rate limit names route `{name}`, which no `[[routes]]` entry matches"
                        ),
                    )
                })?;
                covered.push(route.index);
            }
            built.push(RateLimitConfig {
                per,
                requests: *l.requests.get_ref(),
                window,
                challenges,
                paid,
                routes: covered,
            });
        }
        Ok(built)
    }

    fn redis(&self, spanned: &Spanned<surface::Redis>) -> Result<RedisConfig, ConfigError> {
        let r = spanned.get_ref();
        let url = self.expand(&r.url)?;
        // Errors name the URL without its password: the message ends up in logs.
        let shown = redacted_url(&url);
        let parsed = url::Url::parse(&url)
            .map_err(|e| self.err(&r.url, format!("redis url `{shown}`: {e}")))?;
        if !matches!(parsed.scheme(), "redis" | "rediss") {
            return Err(self.err(
                &r.url,
                format!("redis url `{shown}` must start with redis:// or rediss://"),
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(self.err(&r.url, format!("redis url `{shown}` has no host")));
        }
        let key_prefix = match &r.key_prefix {
            None => "x402:".to_string(),
            Some(p) => self.expand(p)?,
        };
        Ok(RedisConfig {
            url: Secret(url),
            key_prefix,
            timeout: self.positive_duration(&r.timeout, Duration::from_millis(250))?,
        })
    }

    fn journal(&self, j: &surface::Journal, path: &Path) -> Result<JournalConfig, ConfigError> {
        let url = self.secret(&j.url)?;
        if let (Some(url), Some(at)) = (&url, &j.url) {
            // The message never repeats the value: it carries the password.
            if !url.expose().starts_with("postgres://")
                && !url.expose().starts_with("postgresql://")
                || url.expose().parse::<tokio_postgres::Config>().is_err()
            {
                return Err(self.err(
                    at,
                    "journal url is not a PostgreSQL URL like \"postgres://user:${PASSWORD}@host:5432/database\"",
                ));
            }
        }
        let Some(path_text) = &j.path else {
            return Err(self.error(if url.is_some() {
                "[journal] with `url` needs `path` too: the local file that keeps records while the database is unreachable"
            } else {
                "[journal] needs `path` (a local file) or `url` (PostgreSQL) and `path`"
            }));
        };
        let text = self.expand(path_text)?;
        if text.trim().is_empty() {
            return Err(self.err(path_text, "journal path is empty"));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        Ok(JournalConfig {
            path: base.join(text),
            url,
            reconcile_interval: self
                .positive_duration(&j.reconcile_interval, Duration::from_secs(30))?,
        })
    }

    fn positive_duration(
        &self,
        value: &Option<Text>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(value, default)?;
        match value {
            Some(v) if d.is_zero() => Err(self.err(v, "duration must be more than zero")),
            _ => Ok(d),
        }
    }

    fn admin(&self, a: &surface::Admin) -> Result<AdminConfig, ConfigError> {
        let listen = match &a.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 9402)),
            Some(v) => {
                let text = self.expand(v)?;
                text.parse().map_err(|_| {
                    self.err(
                        v,
                        format!("listen = `{text}` is not an address such as \"127.0.0.1:9402\""),
                    )
                })?
            }
        };
        let mut explorers: std::collections::BTreeMap<String, String> = DEFAULT_EXPLORERS
            .iter()
            .map(|(n, u)| (n.to_string(), u.to_string()))
            .collect();
        for (network, prefix) in &a.explorers {
            let text = self.expand(prefix)?;
            let parsed = url::Url::parse(&text)
                .map_err(|e| self.err(prefix, format!("explorer `{text}`: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https")
                || parsed.host_str().is_none()
                || !parsed.username().is_empty()
                || parsed.password().is_some()
            {
                return Err(self.err(
                    prefix,
                    format!("explorer for `{network}` must be an http(s) URL with a host and no credentials, e.g. \"https://basescan.org/tx/\""),
                ));
            }
            if !network.starts_with("eip155:") || chain_id_of(network).is_none() {
                return Err(self.err(
                    prefix,
                    format!("explorer network `{network}` is not a CAIP-2 network such as \"eip155:8453\""),
                ));
            }
            explorers.insert(network.clone(), text);
        }
        Ok(AdminConfig {
            listen,
            probe_interval: self.positive_duration(&a.probe_interval, Duration::from_secs(5))?,
            token: self.secret(&a.token)?,
            explorers,
        })
    }

    fn server(&self, s: &surface::Server, path: &Path) -> Result<ServerConfig, ConfigError> {
        let listen = match &s.listen {
            None => SocketAddr::from(([0, 0, 0, 0], 8402)),
            Some(v) => {
                let text = self.expand(v)?;
                text.parse().map_err(|_| {
                    self.err(
                        v,
                        format!("listen = `{text}` is not an address such as \"0.0.0.0:8402\""),
                    )
                })?
            }
        };
        let threads = match &s.threads {
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Some(t) if *t.get_ref() == 0 || *t.get_ref() > 1024 => {
                return Err(self.err(t, "threads must be between 1 and 1024"))
            }
            Some(t) => *t.get_ref(),
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = match (&s.cert, &s.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some((base.join(self.expand(cert)?), base.join(self.expand(key)?)))
            }
            (Some(v), None) | (None, Some(v)) => {
                return Err(self.err(v, "TLS needs both `cert` and `key` in [server]"))
            }
        };
        let public_url = match &s.public_url {
            None => None,
            Some(v) => {
                let text = self.expand(v)?;
                let parsed = url::Url::parse(&text)
                    .map_err(|e| self.err(v, format!("public_url `{text}`: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                    return Err(self.err(
                        v,
                        format!("public_url `{text}` must be an http(s) URL with a host"),
                    ));
                }
                Some(text.trim_end_matches('/').to_string())
            }
        };
        Ok(ServerConfig {
            listen,
            threads,
            tls,
            public_url,
            grace_period: self.duration(&s.grace_period, Duration::from_secs(10))?,
            requests: crate::pricing::RequestRules {
                method_override: match &s.method_override {
                    None => Default::default(),
                    Some(v) => crate::pricing::MethodOverride::parse(&self.expand(v)?)
                        .map_err(|e| self.err(v, e))?,
                },
                drop_underscore_headers: s.drop_underscore_headers.unwrap_or(false),
            },
            http2: s.http2.unwrap_or(false),
            settle_buffer: self
                .settle_buffer(&s.settle_buffer)?
                .unwrap_or(crate::payment::DEFAULT_SETTLE_BUFFER),
        })
    }

    /// A `settle_buffer` size: whole bytes or a number with a unit, at most
    /// [`MAX_SETTLE_BUFFER`](crate::payment::MAX_SETTLE_BUFFER).
    fn settle_buffer(
        &self,
        value: &Option<Spanned<surface::Size>>,
    ) -> Result<Option<u64>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let bytes = match value.get_ref() {
            surface::Size::Bytes(n) => *n,
            surface::Size::Text(text) => {
                let text = self.expand(&Spanned::new(value.span(), text.clone()))?;
                super::parse_size(&text)
                    .map_err(|e| self.err(value, format!("settle_buffer: {e}")))?
            }
        };
        let max = crate::payment::MAX_SETTLE_BUFFER;
        if bytes > max {
            return Err(self.err(
                value,
                format!("settle_buffer must be at most {max} bytes (64 MiB): each paid answer up to it is held in memory"),
            ));
        }
        Ok(Some(bytes))
    }

    fn upstream(&self, u: &Spanned<surface::Upstream>) -> Result<UpstreamConfig, ConfigError> {
        let u = u.get_ref();
        let text = self.expand(&u.url)?;
        let parsed = url::Url::parse(&text)
            .map_err(|e| self.err(&u.url, format!("upstream url `{text}`: {e}")))?;
        let tls = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(self.err(
                    &u.url,
                    format!("upstream url scheme `{other}` is not http or https"),
                ))
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| self.err(&u.url, format!("upstream url `{text}` has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(self.err(
                &u.url,
                "upstream url must not have a path or query: requests keep their own path",
            ));
        }
        let port = parsed
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let host_header = match parsed.port() {
            Some(p) => format!("{}:{p}", parsed.host_str().unwrap_or_default()),
            None => parsed.host_str().unwrap_or_default().to_string(),
        };
        Ok(UpstreamConfig {
            url: text,
            tls,
            host,
            port,
            host_header,
            connect_timeout: self.duration(&u.connect_timeout, Duration::from_secs(5))?,
            read_timeout: self.duration(&u.read_timeout, Duration::from_secs(60))?,
            idle_timeout: self.duration(&u.idle_timeout, Duration::from_secs(4))?,
            http2: u.http2.unwrap_or(false),
        })
    }

    fn facilitators(&self, file: &surface::File) -> Result<Vec<FacilitatorConfig>, ConfigError> {
        match (&file.facilitator, &file.facilitators) {
            (Some(_), Some(list)) => Err(self.err(
                list.first().ok_or_else(|| self.error("empty [[facilitators]]"))?,
                "use either one `[facilitator]` or `[[facilitators]]`, not both",
            )),
            (None, None) => Err(self.error(
                "missing `[facilitator]` table (kind = \"x402\" with a url, \"okx\", \"agentwallex\", or \"local\" for test mode)",
            )),
            (Some(single), None) => {
                if let Some(fallback) = &single.get_ref().fallback {
                    return Err(self.err(
                        fallback,
                        "`fallback` names another entry of `[[facilitators]]`; a single `[facilitator]` has none",
                    ));
                }
                Ok(vec![self.facilitator(single, false)?])
            }
            (None, Some(list)) => {
                let mut built: Vec<FacilitatorConfig> = Vec::with_capacity(list.len());
                for entry in list {
                    let f = self.facilitator(entry, true)?;
                    if built.iter().any(|b| b.name == f.name) {
                        return Err(self.err(
                            entry,
                            format!("two `[[facilitators]]` are named `{}`", f.name),
                        ));
                    }
                    built.push(f);
                }
                for (entry, f) in list.iter().zip(&built) {
                    let Some(fallback) = &f.fallback else { continue };
                    let at = entry.get_ref().fallback.as_ref().map_or(entry.span(), |t| t.span());
                    if fallback == &f.name {
                        return Err(self.error_at(at, format!("facilitator `{}` cannot be its own fallback", f.name)));
                    }
                    if !built.iter().any(|b| &b.name == fallback) {
                        return Err(self.error_at(
                            at,
                            format!("fallback `{fallback}` of facilitator `{}` is not the name of a `[[facilitators]]` entry", f.name),
                        ));
                    }
                }
                let mut networks: Vec<&String> = built.iter().flat_map(|f| &f.networks).collect();
                networks.sort();
                networks.dedup();
                for network in networks {
                    let primaries: Vec<&str> = primaries_for(&built, network)
                        .map(|i| built[i].name.as_str())
                        .collect();
                    if primaries.len() > 1 {
                        return Err(self.error(format!(
                            "network `{network}` is served by facilitators `{}`: list it in one only, or make the others its `fallback`",
                            primaries.join("`, `")
                        )));
                    }
                }
                Ok(built)
            }
        }
    }

    /// A secret value: expanded, never empty.
    fn secret(&self, value: &Option<Text>) -> Result<Option<Secret>, ConfigError> {
        match value {
            None => Ok(None),
            Some(v) => {
                let text = self.expand(v)?;
                if text.is_empty() {
                    return Err(self.err(v, "this credential is empty"));
                }
                Ok(Some(Secret(text)))
            }
        }
    }

    fn facilitator(
        &self,
        spanned: &Spanned<surface::Facilitator>,
        in_list: bool,
    ) -> Result<FacilitatorConfig, ConfigError> {
        let f = spanned.get_ref();
        let kind = match &f.kind {
            None => FacilitatorKind::X402,
            Some(k) => match self.expand(k)?.as_str() {
                "x402" => FacilitatorKind::X402,
                "local" => FacilitatorKind::Local,
                "okx" => FacilitatorKind::Okx,
                "agentwallex" => FacilitatorKind::AgentWallex,
                other => {
                    return Err(self.err(
                        k,
                        format!("facilitator kind `{other}` is not one of \"x402\", \"okx\", \"agentwallex\", \"local\""),
                    ))
                }
            },
        };
        let name = match (&f.name, in_list) {
            (Some(n), _) => {
                let name = self.expand(n)?;
                if name.is_empty() {
                    return Err(self.err(n, "facilitator `name` is empty"));
                }
                name
            }
            (None, true) => {
                return Err(self.err(spanned, "each `[[facilitators]]` entry needs a `name`"))
            }
            (None, false) => kind.as_str().to_string(),
        };
        let networks = match &f.networks {
            None if in_list => {
                return Err(self.err(
                    spanned,
                    format!("facilitator `{name}` needs `networks`, the CAIP-2 networks it serves"),
                ))
            }
            None => Vec::new(),
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.err(
                        list,
                        format!("facilitator `{name}` has an empty `networks` list"),
                    ));
                }
                for n in list.get_ref() {
                    if chain_id_of(n).is_none() || !n.starts_with("eip155:") {
                        return Err(self.err(
                            list,
                            format!("network `{n}` is not a CAIP-2 EVM id such as \"eip155:8453\""),
                        ));
                    }
                }
                list.get_ref().clone()
            }
        };
        // Keys of another kind are mistakes (a credential under the wrong facilitator).
        let only_for = |key: &str, value: bool, kinds: &[FacilitatorKind]| {
            if value && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(self.err(
                    spanned,
                    format!(
                        "facilitator `{name}`: `{key}` applies to kind \"{}\" only",
                        names.join("\", \"")
                    ),
                ));
            }
            Ok(())
        };
        use FacilitatorKind::{AgentWallex, Okx, X402};
        only_for("bearer_token", f.bearer_token.is_some(), &[X402])?;
        only_for("api", f.api.is_some(), &[Okx])?;
        only_for("secret_key", f.secret_key.is_some(), &[Okx])?;
        only_for("passphrase", f.passphrase.is_some(), &[Okx])?;
        only_for(
            "settle_poll_deadline",
            f.settle_poll_deadline.is_some(),
            &[Okx],
        )?;
        only_for("api_key", f.api_key.is_some(), &[Okx, AgentWallex])?;
        only_for("environment", f.environment.is_some(), &[AgentWallex])?;
        only_for("url", f.url.is_some(), &[X402, Okx, AgentWallex])?;

        let url = self.opt(&f.url)?;
        if let (Some(text), Some(at)) = (&url, &f.url) {
            let parsed = url::Url::parse(text)
                .map_err(|e| self.err(at, format!("facilitator url `{text}`: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(self.err(
                    at,
                    format!("facilitator url `{text}` must be http or https"),
                ));
            }
        }
        let required = |key: &str, value: Option<Secret>| {
            value.ok_or_else(|| {
                self.err(
                    spanned,
                    format!(
                        "facilitator `{name}` (kind \"{}\") needs `{key}`, e.g. \"${{{}}}\"",
                        kind.as_str(),
                        key.to_ascii_uppercase()
                    ),
                )
            })
        };
        let mut okx = None;
        let mut agentwallex = None;
        let url = match kind {
            FacilitatorKind::X402 => match url {
                Some(u) => Some(u),
                None => return Err(self.err(spanned, "facilitator kind \"x402\" needs a `url`")),
            },
            FacilitatorKind::Local => None,
            FacilitatorKind::Okx => {
                let api = match &f.api {
                    None => OkxApi::V2,
                    Some(v) => match self.expand(v)?.as_str() {
                        "v2" => OkxApi::V2,
                        "legacy" => OkxApi::Legacy,
                        other => {
                            return Err(self
                                .err(v, format!("api = `{other}`: expected \"v2\" or \"legacy\"")))
                        }
                    },
                };
                okx = Some(OkxSettings {
                    api,
                    api_key: required("api_key", self.secret(&f.api_key)?)?,
                    secret_key: required("secret_key", self.secret(&f.secret_key)?)?,
                    passphrase: required("passphrase", self.secret(&f.passphrase)?)?,
                    settle_poll_deadline: self
                        .duration(&f.settle_poll_deadline, Duration::from_secs(5))?,
                });
                Some(url.unwrap_or_else(|| OKX_DEFAULT_URL.to_string()))
            }
            FacilitatorKind::AgentWallex => {
                let sandbox = match &f.environment {
                    None => false,
                    Some(v) => match self.expand(v)?.as_str() {
                        "production" => false,
                        "sandbox" => true,
                        other => {
                            return Err(self.err(
                                v,
                                format!(
                                "environment = `{other}`: expected \"production\" or \"sandbox\""
                            ),
                            ))
                        }
                    },
                };
                agentwallex = Some(AgentWallexSettings {
                    api_key: required("api_key", self.secret(&f.api_key)?)?,
                    sandbox,
                });
                let default = if sandbox {
                    AGENTWALLEX_SANDBOX_URL
                } else {
                    AGENTWALLEX_URL
                };
                Some(url.unwrap_or_else(|| default.to_string()))
            }
        };
        Ok(FacilitatorConfig {
            name,
            kind,
            url: url.map(|u| u.trim_end_matches('/').to_string()),
            bearer_token: self.secret(&f.bearer_token)?,
            timeout: self.duration(&f.timeout, Duration::from_secs(10))?,
            networks,
            fallback: self.opt(&f.fallback)?,
            okx,
            agentwallex,
        })
    }

    /// Every option of a priced route needs a facilitator for its network, and one that knows
    /// its scheme.
    fn check_route_facilitators(
        &self,
        spanned: &Spanned<surface::Route>,
        route: &Route,
        facilitators: &[FacilitatorConfig],
    ) -> Result<(), ConfigError> {
        for option in route.kind.priced_routes().flat_map(|p| &p.options) {
            let network = &option.requirements.network;
            let Some(index) = primary_facilitator(facilitators, network) else {
                return Err(self.err(
                    spanned,
                    format!(
                        "route `{}` takes payments on `{network}`, but no facilitator lists that network",
                        route.source
                    ),
                ));
            };
            let facilitator = &facilitators[index];
            let legacy = facilitator
                .okx
                .as_ref()
                .is_some_and(|o| o.api == OkxApi::Legacy);
            if option.requirements.scheme == "aggr_deferred" && legacy {
                return Err(self.err(
                    spanned,
                    format!(
                        "route `{}`: scheme \"aggr_deferred\" needs OKX's current API, but facilitator `{}` has api = \"legacy\"",
                        route.source, facilitator.name
                    ),
                ));
            }
            if option.requirements.scheme == "aggr_deferred"
                && facilitator.kind != FacilitatorKind::Okx
            {
                return Err(self.err(
                    spanned,
                    format!(
                        "route `{}`: scheme \"aggr_deferred\" is settled by OKX only, but `{network}` is served by facilitator `{}` (kind \"{}\")",
                        route.source, facilitator.name, facilitator.kind.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `verify = "local"` (on the route, or in `[defaults]`): the local checks stand in for the
    /// facilitator's `/verify`. Only where they are the whole check short of the funds: `exact`
    /// payments settled after the upstream succeeded.
    fn verify_policy(
        &self,
        source: &str,
        route: &surface::Route,
        defaults: &surface::Defaults,
        settle: SettlementPolicy,
        options: &[PaymentOption],
    ) -> Result<VerifyPolicy, ConfigError> {
        let (text, on_route) = match (&route.verify, &defaults.verify) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            (None, None) => return Ok(VerifyPolicy::Facilitator),
        };
        match self.expand(text)?.as_str() {
            "facilitator" => return Ok(VerifyPolicy::Facilitator),
            "local" => {}
            other => {
                return Err(self.err(
                    text,
                    format!("verify = `{other}`: expected \"facilitator\" or \"local\""),
                ))
            }
        }
        let other_scheme = options
            .iter()
            .map(|o| o.requirements.scheme.as_str())
            .find(|scheme| *scheme != EXACT);
        let refusal = if settle == SettlementPolicy::Before {
            Some("settle = \"before\" routes make no `/verify` call: `/settle` checks the payment first".to_string())
        } else {
            other_scheme.map(|scheme| format!("`{scheme}` payments are verified by the facilitator; verify = \"local\" applies to `exact` payments"))
        };
        match refusal {
            // A `[defaults]` choice applies where it can and leaves the other routes as they are.
            Some(_) if !on_route => Ok(VerifyPolicy::Facilitator),
            Some(reason) => Err(self.err(text, format!("route `{source}`: {reason}"))),
            None => Ok(VerifyPolicy::Local),
        }
    }

    fn settle_policy(&self, v: &Text) -> Result<SettlementPolicy, ConfigError> {
        match self.expand(v)?.as_str() {
            "after-success" => Ok(SettlementPolicy::AfterSuccess),
            "before" => Ok(SettlementPolicy::Before),
            other => Err(self.err(
                v,
                format!("settle = `{other}`: expected \"after-success\" or \"before\""),
            )),
        }
    }

    fn route(
        &self,
        index: usize,
        spanned: &Spanned<surface::Route>,
        defaults: &surface::Defaults,
        default_settle: SettlementPolicy,
        assets: &AssetRegistry,
    ) -> Result<Route, ConfigError> {
        let route = spanned.get_ref();
        let source = self.expand(&route.pattern)?;
        let pattern =
            RoutePattern::parse(&source).map_err(|e| self.err(&route.pattern, e.to_string()))?;
        let has_items =
            route.tools.is_some() || route.resources.is_some() || route.prompts.is_some();
        if has_items && !route.mcp {
            return Err(self.err(
                spanned,
                format!(
                    "route `{source}` lists tools, resources or prompts but is not `mcp = true`"
                ),
            ));
        }
        if route.free && route.mcp {
            return Err(self.err(
                spanned,
                format!("route `{source}` is both `free = true` and `mcp = true`: an MCP route without priced items is free already"),
            ));
        }
        let kind = if route.free {
            if route.has_inline_terms() || route.accepts.is_some() {
                return Err(self.err(
                    spanned,
                    format!("route `{source}` is `free = true` but also has a price"),
                ));
            }
            // Every payment key of a free route would be silently ignored: refuse them.
            if let Some(key) = route.payment_keys().first() {
                return Err(self.err(
                    spanned,
                    format!("route `{source}` is `free = true` but sets `{key}`, which only priced routes use"),
                ));
            }
            RouteKind::Free
        } else if route.mcp {
            if let Some(access) = &route.access {
                return Err(self.err(
                    access,
                    format!("route `{source}`: `access` is for HTTP routes; MCP tools pay for each call"),
                ));
            }
            RouteKind::Mcp(self.mcp_route(
                &source,
                &pattern,
                spanned,
                defaults,
                default_settle,
                assets,
            )?)
        } else {
            RouteKind::Priced(
                self.priced_route(&source, &pattern, spanned, defaults, default_settle, assets)
                    .and_then(|priced| {
                        self.listed(
                            priced,
                            &source,
                            spanned,
                            defaults,
                            Listed::Http { pattern: &source },
                        )
                    })?,
            )
        };
        Ok(Route {
            index,
            source,
            pattern,
            kind,
        })
    }

    /// An MCP route: its priced tools, resources and prompts. The route's own payment keys
    /// (`network`, `pay_to`, `asset`, `scheme`, ...) are the defaults of its items.
    fn mcp_route(
        &self,
        source: &str,
        pattern: &RoutePattern,
        spanned: &Spanned<surface::Route>,
        defaults: &surface::Defaults,
        default_settle: SettlementPolicy,
        assets: &AssetRegistry,
    ) -> Result<McpRoute, ConfigError> {
        let route = spanned.get_ref();
        if let Some((key, _)) = route.metering_keys().into_iter().find(|(_, set)| *set) {
            return Err(self.err(
                spanned,
                format!("route `{source}` is `mcp = true` and sets `{key}`: metered prices are not supported on MCP routes yet"),
            ));
        }
        if route.has_inline_terms() || route.accepts.is_some() || route.price_rules.is_some() {
            return Err(self.err(
                spanned,
                format!("route `{source}` is `mcp = true`: price its items in [[routes.tools]], [[routes.resources]] or [[routes.prompts]], not the route"),
            ));
        }
        if let Some(at) = &route.settle_buffer {
            return Err(self.err(
                at,
                format!("route `{source}` is `mcp = true`: a paid MCP call's answer is always received whole before it is settled, so settle_buffer cannot apply"),
            ));
        }
        let per_tool = [
            ("input_schema", route.input_schema.is_some()),
            ("input_example", route.input_example.is_some()),
            ("output_schema", route.output_schema.is_some()),
            ("output_example", route.output_example.is_some()),
            ("body_type", route.body_type.is_some()),
        ];
        if let Some((key, _)) = per_tool.into_iter().find(|(_, set)| *set) {
            return Err(self.err(
                spanned,
                format!("route `{source}` is `mcp = true` and sets `{key}`: set it on each [[routes.tools]] entry"),
            ));
        }
        let mut items: Vec<McpPricedItem> = Vec::new();
        let lists = [
            (McpItemKind::Tool, &route.tools, "name"),
            (McpItemKind::Resource, &route.resources, "uri"),
            (McpItemKind::Prompt, &route.prompts, "name"),
        ];
        for (kind, list, key) in lists {
            for entry in list.iter().flatten() {
                let e = entry.get_ref();
                let (wanted, other) = match key {
                    "uri" => (&e.uri, &e.name),
                    _ => (&e.name, &e.uri),
                };
                let kind_name = kind.as_str();
                if other.is_some() {
                    let other_key = if key == "uri" { "name" } else { "uri" };
                    return Err(self.err(entry, format!("a {kind_name} of route `{source}` is named by `{key}`, not `{other_key}`")));
                }
                let name = match wanted {
                    Some(text) => self.expand(text)?,
                    None => {
                        return Err(self.err(
                            entry,
                            format!("a {kind_name} of route `{source}` has no `{key}`"),
                        ))
                    }
                };
                if name.is_empty() {
                    return Err(self.err(
                        entry,
                        format!("a {kind_name} of route `{source}` has an empty `{key}`"),
                    ));
                }
                if items.iter().any(|i| i.kind == kind && i.name == name) {
                    return Err(self.err(
                        entry,
                        format!("route `{source}` prices {kind_name} `{name}` twice"),
                    ));
                }
                let listing = if kind == McpItemKind::Tool {
                    // The route's catalog fields are its tools' defaults; inputs and outputs
                    // belong to each tool.
                    let own = e.listing();
                    surface::Listing {
                        discoverable: own.discoverable.or_else(|| route.discoverable.clone()),
                        service_name: own.service_name.or_else(|| route.service_name.clone()),
                        tags: own.tags.or_else(|| route.tags.clone()),
                        icon_url: own.icon_url.or_else(|| route.icon_url.clone()),
                        ..own
                    }
                } else {
                    let own = e.listing();
                    let set = own.discoverable.is_some().then_some("discoverable");
                    if let Some(key) = set.or_else(|| own.set_keys().first().copied()) {
                        return Err(self.err(
                            entry,
                            format!("{kind_name} `{name}` of route `{source}` sets `{key}`: only MCP tools are listed in the Bazaar"),
                        ));
                    }
                    surface::Listing::default()
                };
                let as_route = surface::Route {
                    pattern: route.pattern.clone(),
                    free: false,
                    // A channel's terms are the MCP route's; each tool's deposit is ten calls.
                    withdraw_delay: route.withdraw_delay.clone(),
                    min_deposit: None,
                    description: e.description.clone().or_else(|| route.description.clone()),
                    mime_type: e.mime_type.clone().or_else(|| route.mime_type.clone()),
                    settle: e.settle.clone().or_else(|| route.settle.clone()),
                    // A tool is verified as its MCP route says.
                    verify: route.verify.clone(),
                    sync_settle: e.sync_settle.clone().or_else(|| route.sync_settle.clone()),
                    // Each `accepts` entry falls back on these merged keys, as on a route.
                    accepts: e.accepts.clone(),
                    price: e.price.clone(),
                    amount: e.amount.clone(),
                    asset: e.asset.clone().or_else(|| route.asset.clone()),
                    network: e.network.clone().or_else(|| route.network.clone()),
                    pay_to: e.pay_to.clone().or_else(|| route.pay_to.clone()),
                    scheme: e.scheme.clone().or_else(|| route.scheme.clone()),
                    max_timeout_seconds: e
                        .max_timeout_seconds
                        .clone()
                        .or_else(|| route.max_timeout_seconds.clone()),
                    price_rules: None,
                    mcp: false,
                    tools: None,
                    resources: None,
                    prompts: None,
                    usage_header: None,
                    unit_price: None,
                    unit_amount: None,
                    amount_header: None,
                    usage_json: None,
                    usage_fallback: None,
                    access: None,
                    discoverable: listing.discoverable,
                    input_schema: listing.input_schema,
                    input_example: listing.input_example,
                    output_schema: listing.output_schema,
                    output_example: listing.output_example,
                    service_name: listing.service_name,
                    tags: listing.tags,
                    icon_url: listing.icon_url,
                    body_type: None,
                    settle_buffer: None,
                };
                let label = format!("{source} {kind_name} {name}");
                let as_route = Spanned::new(entry.span(), as_route);
                // Only tools have a Bazaar shape; resources and prompts are never listed.
                let listed = (kind == McpItemKind::Tool).then(|| Listed::Tool {
                    name: &name,
                    description: as_route
                        .get_ref()
                        .description
                        .as_ref()
                        .map(|d| d.get_ref().clone()),
                });
                let mut priced = self.priced_route(
                    &label,
                    pattern,
                    &as_route,
                    defaults,
                    default_settle,
                    assets,
                )?;
                if let Some(listed) = listed {
                    priced = self.listed(priced, &label, &as_route, defaults, listed)?;
                }
                // A paid MCP call is settled from the JSON-RPC result, which carries no usage
                // report the gateway reads yet.
                if priced.metering.is_some() {
                    return Err(self.err(
                        entry,
                        format!("{kind_name} `{name}` of route `{source}`: scheme \"upto\" is not supported on MCP items yet"),
                    ));
                }
                items.push(McpPricedItem { kind, name, priced });
            }
        }
        Ok(McpRoute { items })
    }

    /// `priced` with its Bazaar declaration (and its price rules with the same one), when listed.
    fn listed(
        &self,
        mut priced: PricedRoute,
        source: &str,
        spanned: &Spanned<surface::Route>,
        defaults: &surface::Defaults,
        listed: Listed<'_>,
    ) -> Result<PricedRoute, ConfigError> {
        let owner = format!("route `{source}`");
        let discovery = self.listing(
            &owner,
            &spanned.get_ref().listing(),
            defaults,
            listed,
            spanned,
        )?;
        for rule in &mut priced.price_rules {
            rule.priced.discovery = discovery.clone();
        }
        priced.discovery = discovery;
        Ok(priced)
    }

    /// The prices of a priced route (or of one item of an MCP route, given as a route).
    fn priced_route(
        &self,
        source: &str,
        pattern: &RoutePattern,
        spanned: &Spanned<surface::Route>,
        defaults: &surface::Defaults,
        default_settle: SettlementPolicy,
        assets: &AssetRegistry,
    ) -> Result<PricedRoute, ConfigError> {
        let route = spanned.get_ref();
        let terms: Vec<(surface::PaymentTerms, std::ops::Range<usize>)> = match (&route.accepts, route.has_inline_terms()) {
            (Some(_), true) => {
                return Err(self.err(spanned, format!("route `{source}` has both `accepts` and a price: use one")))
            }
            (Some(list), false) if list.is_empty() => {
                return Err(self.err(spanned, format!("route `{source}` has an empty `accepts` list")))
            }
            // Route-level keys are the defaults of each of its `accepts` entries.
            (Some(list), false) => list
                .iter()
                .map(|t| (t.get_ref().or_route(route), t.span()))
                .collect(),
            (None, true) => vec![(route.inline_terms(), spanned.span())],
            (None, false) => {
                return Err(self.err(
                    spanned,
                    format!("route `{source}` has no `price`, `amount` or `accepts`; set one, or `free = true`"),
                ))
            }
        };
        let settle = match &route.settle {
            Some(s) => self.settle_policy(s)?,
            None => default_settle,
        };
        let build_options = |price: Option<&Text>, amount: Option<&Text>| {
            let mut options = Vec::with_capacity(terms.len());
            for (t, span) in &terms {
                let mut t = t.clone();
                if price.is_some() || amount.is_some() {
                    t.price = price.cloned();
                    t.amount = amount.cloned();
                }
                let mut option = self.option(source, &t, span.clone(), defaults, assets)?;
                if let (Some(flow), Some(extra)) = (
                    settle.payment_flow(),
                    option.requirements.extra.as_object_mut(),
                ) {
                    extra.insert(PAYMENT_FLOW.into(), flow.into());
                }
                options.push(option);
            }
            Ok::<_, ConfigError>(options)
        };
        let options = build_options(None, None)?;
        let verify = self.verify_policy(source, route, defaults, settle, &options)?;
        let mut rules = Vec::new();
        for rule in route.price_rules.iter().flatten() {
            let condition = self.price_condition(source, pattern, rule)?;
            let r = rule.get_ref();
            if r.price.is_none() && r.amount.is_none() {
                return Err(self.err(
                    rule,
                    format!("a price rule of route `{source}` sets no `price` or `amount`"),
                ));
            }
            rules.push((
                condition,
                build_options(r.price.as_ref(), r.amount.as_ref())?,
            ));
        }
        let metering = self.metering(source, spanned, &options, settle)?;
        let access = self.access(source, spanned, metering.is_some())?;
        // Bounded by `MAX_SETTLE_BUFFER`, so it fits.
        let settle_buffer = self
            .settle_buffer(&route.settle_buffer)?
            .map(|b| u32::try_from(b).unwrap_or(u32::MAX));
        if let (Some(_), Some(at), SettlementPolicy::Before) =
            (settle_buffer, &route.settle_buffer, settle)
        {
            return Err(self.err(
                at,
                format!("route `{source}` is settled before the upstream is called (settle = \"before\"): no answer waits for its settlement, so settle_buffer cannot apply"),
            ));
        }
        if options
            .iter()
            .any(|o| o.requirements.scheme == BATCH_SETTLEMENT)
        {
            // A voucher is charged once the upstream has answered, from the buyer's channel.
            if settle == SettlementPolicy::Before {
                return Err(self.err(
                    spanned,
                    format!("route `{source}` takes batch-settlement vouchers, which are charged once the upstream has answered: settle = \"before\" cannot apply"),
                ));
            }
            if access.is_some() {
                return Err(self.err(
                    spanned,
                    format!("route `{source}`: access windows are sold with exact or upto payments, not through batch-settlement channels"),
                ));
            }
        }
        let mut priced = PricedRoute {
            metering,
            access,
            discovery: None,
            options,
            description: self.opt(&route.description)?.unwrap_or_default(),
            mime_type: self
                .opt(&route.mime_type)?
                .unwrap_or_else(|| "application/json".into()),
            settle,
            verify,
            sync_settle: route
                .sync_settle
                .as_ref()
                .or(defaults.sync_settle.as_ref())
                .is_some_and(|s| *s.get_ref()),
            challenge: Default::default(),
            price_rules: Vec::new(),
            settle_buffer,
        };
        priced.price_rules = rules
            .into_iter()
            .map(|(condition, options)| PriceRule {
                condition,
                priced: PricedRoute {
                    options,
                    challenge: Default::default(),
                    ..priced.clone()
                },
            })
            .collect();
        Ok(priced)
    }

    /// The access window of a priced HTTP route (`access = "24h"`): how long a settled payment
    /// lets its payer sign in instead of paying again. Fixed prices only: a metered charge says
    /// nothing about later use.
    fn access(
        &self,
        source: &str,
        spanned: &Spanned<surface::Route>,
        metered: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = &spanned.get_ref().access else {
            return Ok(None);
        };
        if metered {
            return Err(self.err(
                text,
                format!("route `{source}`: `access` needs a fixed price; a metered (upto) route charges each request for its use"),
            ));
        }
        let value = self.expand(text)?;
        let window = parse_duration(&value)
            .map_err(|e| self.err(text, format!("route `{source}`: access = `{value}`: {e}")))?;
        if window.is_zero() {
            return Err(self.err(
                text,
                format!("route `{source}`: access must be longer than 0s"),
            ));
        }
        Ok(Some(window))
    }

    /// The metering of a route whose options are `upto`: where the charge is read from and the
    /// fallback. Metering keys anywhere else are refused, since they would be silently ignored.
    fn metering(
        &self,
        source: &str,
        spanned: &Spanned<surface::Route>,
        options: &[PaymentOption],
        settle: SettlementPolicy,
    ) -> Result<Option<Box<Metering>>, ConfigError> {
        let route = spanned.get_ref();
        let upto = options.iter().any(|o| o.requirements.scheme == UPTO);
        if !upto {
            if let Some((key, _)) = route.metering_keys().into_iter().find(|(_, set)| *set) {
                return Err(self.err(
                    spanned,
                    format!("route `{source}` sets `{key}`, which only metered routes read: add scheme = \"upto\" or remove it"),
                ));
            }
            return Ok(None);
        }
        // One meter reads one asset's units: a metered route offers one way to pay.
        let [option] = options else {
            return Err(self.err(
                spanned,
                format!("route `{source}` is metered (scheme = \"upto\") and must offer exactly one payment option, not {}", options.len()),
            ));
        };
        if settle == SettlementPolicy::Before {
            return Err(self.err(
                spanned,
                format!("route `{source}` is metered (scheme = \"upto\"): it is settled from the response, so settle = \"before\" cannot apply"),
            ));
        }
        let header_name = |text: &Text| -> Result<http::HeaderName, ConfigError> {
            let value = self.expand(text)?;
            http::HeaderName::from_bytes(value.as_bytes())
                .map_err(|_| self.err(text, format!("`{value}` is not a header name")))
        };
        let unit = match (&route.unit_price, &route.unit_amount) {
            (Some(_), Some(a)) => {
                return Err(self.err(
                    a,
                    format!("route `{source}` sets both `unit_price` and `unit_amount`: use one"),
                ))
            }
            (Some(p), None) => Some(
                parse_price(&self.expand(p)?, option.decimals)
                    .map_err(|e| self.err(p, format!("unit_price: {e}")))?,
            ),
            (None, Some(a)) => {
                let text = self.expand(a)?;
                match text.parse::<u128>() {
                    Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                    _ => {
                        return Err(self.err(
                            a,
                            format!("unit_amount `{text}` is not a whole number of atomic units"),
                        ))
                    }
                }
            }
            (None, None) => None,
        };
        if let Some(json) = &route.usage_json {
            // One source per route: the body is read only when the head names nothing.
            let other = [
                ("usage_header", &route.usage_header),
                ("amount_header", &route.amount_header),
            ]
            .into_iter()
            .find_map(|(key, set)| set.as_ref().map(|_| key));
            if let Some(key) = other {
                return Err(self.err(
                    json,
                    format!("route `{source}` sets both `usage_json` and `{key}`: the charge comes from one"),
                ));
            }
            let Some(unit_amount) = unit else {
                return Err(self.err(
                    json,
                    format!("route `{source}` sets `usage_json` without `unit_price` or `unit_amount`: say what one unit costs"),
                ));
            };
            let text = self.expand(json)?;
            let path = UsagePath::parse(&text)
                .map_err(|e| self.err(json, format!("usage_json = `{text}`: {e}")))?;
            let fallback = self.usage_fallback(route)?;
            return Ok(Some(Box::new(Metering {
                header: None,
                body: Some(UsageJson { path, unit_amount }),
                fallback,
            })));
        }
        let header = match (&route.usage_header, &route.amount_header, unit) {
            (Some(_), Some(a), _) => {
                return Err(self.err(
                    a,
                    format!("route `{source}` sets both `usage_header` and `amount_header`: the charge comes from one"),
                ))
            }
            (Some(u), None, Some(unit_amount)) => Some(UsageHeader {
                name: header_name(u)?,
                meter: Meter::PerUnit { unit_amount },
            }),
            (Some(u), None, None) => {
                return Err(self.err(
                    u,
                    format!("route `{source}` sets `usage_header` without `unit_price` or `unit_amount`: say what one unit costs"),
                ))
            }
            (None, Some(a), None) => Some(UsageHeader {
                name: header_name(a)?,
                meter: Meter::Absolute,
            }),
            (None, _, Some(_)) => {
                let at = route.unit_price.as_ref().or(route.unit_amount.as_ref());
                return Err(match at {
                    Some(at) => self.err(
                        at,
                        format!("route `{source}` sets a unit price without `usage_header` or `usage_json`: name where the units used are reported"),
                    ),
                    None => self.err(spanned, format!("route `{source}`: a unit price needs `usage_header`")),
                });
            }
            (None, None, None) => None,
        };
        let fallback = self.usage_fallback(route)?;
        Ok(Some(Box::new(Metering {
            header,
            body: None,
            fallback,
        })))
    }

    /// A metered route's `usage_fallback`: `maximum` unless it says `nothing`.
    fn usage_fallback(&self, route: &surface::Route) -> Result<UsageFallback, ConfigError> {
        Ok(match &route.usage_fallback {
            None => UsageFallback::Maximum,
            Some(text) => match self.expand(text)?.as_str() {
                "maximum" => UsageFallback::Maximum,
                "nothing" => UsageFallback::Nothing,
                other => {
                    return Err(self.err(
                        text,
                        format!("usage_fallback = `{other}`: expected \"maximum\" or \"nothing\""),
                    ))
                }
            },
        })
    }

    fn price_condition(
        &self,
        source: &str,
        pattern: &RoutePattern,
        rule: &Spanned<surface::PriceRule>,
    ) -> Result<PriceCondition, ConfigError> {
        let r = rule.get_ref();
        let values = r
            .equals
            .clone()
            .map(surface::OneOrMany::into_vec)
            .unwrap_or_default();
        if r.equals.is_some() && values.is_empty() {
            return Err(self.err(
                rule,
                format!("a price rule of route `{source}` has an empty `equals` list"),
            ));
        }
        let kinds = [
            r.query.is_some(),
            r.header.is_some(),
            r.path_param.is_some(),
            r.body_over.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(self.err(
                rule,
                format!("a price rule of route `{source}` needs exactly one of `query`, `header`, `path_param` or `body_over`"),
            ));
        }
        if let Some(name) = &r.query {
            return Ok(PriceCondition::Query {
                name: self.expand(name)?,
                values,
            });
        }
        if let Some(name) = &r.header {
            let text = self.expand(name)?;
            let name = http::HeaderName::from_bytes(text.as_bytes())
                .map_err(|_| self.err(name, format!("`{text}` is not a header name")))?;
            return Ok(PriceCondition::Header { name, values });
        }
        if let Some(name) = &r.path_param {
            let text = self.expand(name)?;
            let text = text.trim_start_matches(':').to_string();
            let position = pattern.param_position(&text).ok_or_else(|| {
                self.err(name, format!("route `{source}` has no `:{text}` segment"))
            })?;
            // Paths are matched in canonical (lower-case) form, so are the values.
            let values = values
                .iter()
                .map(|v| {
                    canonical_path(&format!("/{v}"))
                        .trim_start_matches('/')
                        .to_string()
                })
                .collect();
            return Ok(PriceCondition::PathParam {
                name: text,
                position,
                values,
            });
        }
        if r.equals.is_some() {
            return Err(self.err(
                rule,
                format!("a `body_over` price rule of route `{source}` takes no `equals`"),
            ));
        }
        Ok(PriceCondition::BodyOver(
            r.body_over.as_ref().map_or(0, |b| *b.get_ref()),
        ))
    }

    /// The `extra` of a `batch-settlement` option: the token's EIP-712 domain, the withdraw delay
    /// and the deposit asked for. The receiver authorizer is the facilitator's, added at start-up
    /// from its `/supported`.
    fn batch_extra(
        &self,
        route: &str,
        t: &surface::PaymentTerms,
        token_domain: serde_json::Value,
        amount: u128,
        decimals: u8,
    ) -> Result<serde_json::Value, ConfigError> {
        let delay = self.duration(
            &t.withdraw_delay,
            Duration::from_secs(MIN_WITHDRAW_DELAY_SECS),
        )?;
        let delay_secs = delay.as_secs();
        if !(MIN_WITHDRAW_DELAY_SECS..=MAX_WITHDRAW_DELAY_SECS).contains(&delay_secs)
            || delay.subsec_nanos() != 0
        {
            let at = t
                .withdraw_delay
                .as_ref()
                .map(|v| v.span())
                .unwrap_or_default();
            return Err(self.error_at(
                at,
                format!("route `{route}`: withdraw_delay must be whole seconds from 15m to 720h (30 days: the escrow's bounds)"),
            ));
        }
        let min_deposit = match &t.min_deposit {
            None => amount.saturating_mul(10),
            Some(text) => {
                let value = self.expand(text)?;
                let parsed = if value.bytes().all(|b| b.is_ascii_digit()) && !value.is_empty() {
                    value
                        .parse::<u128>()
                        .map_err(|_| self.err(text, "min_deposit is too large"))?
                } else {
                    parse_price(&value, decimals)
                        .map_err(|e| self.err(text, format!("min_deposit: {e}")))?
                };
                if parsed < amount {
                    return Err(self.err(
                        text,
                        format!("route `{route}`: min_deposit must cover at least one request ({amount} atomic units)"),
                    ));
                }
                parsed
            }
        };
        let mut extra = token_domain;
        if let Some(map) = extra.as_object_mut() {
            map.insert(WITHDRAW_DELAY_KEY.into(), serde_json::json!(delay_secs));
            map.insert(
                MIN_DEPOSIT_KEY.into(),
                serde_json::json!(min_deposit.to_string()),
            );
        }
        Ok(extra)
    }

    fn option(
        &self,
        route: &str,
        t: &surface::PaymentTerms,
        span: std::ops::Range<usize>,
        defaults: &surface::Defaults,
        assets: &AssetRegistry,
    ) -> Result<PaymentOption, ConfigError> {
        let pick =
            |own: &Option<Text>, default: &Option<Text>| own.clone().or_else(|| default.clone());
        let at = |field: &Option<Text>| field.as_ref().map_or(span.clone(), |f| f.span());
        let missing = |key: &str| {
            self.error_at(
                span.clone(),
                format!("route `{route}` has no `{key}` and [defaults] sets none"),
            )
        };

        let network_text = pick(&t.network, &defaults.network).ok_or_else(|| missing("network"))?;
        let network = self.expand(&network_text)?;
        let chain_id = chain_id_of(&network)
            .filter(|_| network.starts_with("eip155:"))
            .ok_or_else(|| {
                self.err(
                    &network_text,
                    format!("network `{network}` is not a CAIP-2 EVM id such as \"eip155:8453\""),
                )
            })?;

        let scheme = match pick(&t.scheme, &defaults.scheme) {
            Some(s) => self.expand(&s)?,
            None => "exact".to_string(),
        };
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(self.error_at(
                at(&t.scheme),
                format!(
                    "scheme `{scheme}` is not supported (\"exact\", \"aggr_deferred\", \"upto\" or \"batch-settlement\")"
                ),
            ));
        }

        let pay_to_text = pick(&t.pay_to, &defaults.pay_to).ok_or_else(|| missing("pay_to"))?;
        let pay_to_raw = self.expand(&pay_to_text)?;
        let pay_to = checksum_address(&pay_to_raw).ok_or_else(|| {
            self.err(
                &pay_to_text,
                format!("pay_to `{pay_to_raw}` is not a 0x-prefixed 20-byte address"),
            )
        })?;

        let asset_name = match pick(&t.asset, &defaults.asset) {
            Some(a) => self.expand(&a)?,
            None => "USDC".to_string(),
        };
        let asset = assets.find(&network, &asset_name).ok_or_else(|| {
            self.error_at(
                at(&t.asset),
                format!(
                    "asset `{asset_name}` is not known on `{network}`: add [assets.\"{network}\".{asset_name}] with address, decimals, name and version"
                ),
            )
        })?;

        let amount = match (&t.price, &t.amount) {
            (Some(_), Some(a)) => {
                return Err(self.err(
                    a,
                    format!("route `{route}` sets both `price` and `amount`: use one"),
                ))
            }
            (Some(p), None) => parse_price(&self.expand(p)?, asset.decimals)
                .map_err(|e| self.err(p, e.to_string()))?,
            (None, Some(a)) => {
                let text = self.expand(a)?;
                match text.parse::<u128>() {
                    Ok(0) => {
                        return Err(self.err(
                            a,
                            "amount is zero; use `free = true` for a route without payment",
                        ))
                    }
                    Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => n,
                    _ => {
                        return Err(self.err(
                            a,
                            format!("amount `{text}` is not a whole number of atomic units"),
                        ))
                    }
                }
            }
            (None, None) => return Err(missing("price")),
        };

        let max_timeout_seconds = t
            .max_timeout_seconds
            .as_ref()
            .or(defaults.max_timeout_seconds.as_ref())
            .map_or(300, |m| *m.get_ref());
        if max_timeout_seconds <= crate::payment::VALID_BEFORE_MARGIN_SECS {
            return Err(self.error_at(span, "max_timeout_seconds must be more than 6 seconds"));
        }

        let token_domain = serde_json::json!({"name": asset.name, "version": asset.version});
        // `upto` moves the asset through Permit2; the settling facilitator's address is added at
        // start-up, once its `/supported` has named it.
        // `upto` has no x402 v1 form: v1 buyers are neither offered nor accepted an `upto` option.
        let v1_network = if scheme == UPTO || scheme == BATCH_SETTLEMENT {
            None
        } else {
            v1_name_of(&network)
        };
        if scheme != BATCH_SETTLEMENT {
            if let Some(key) = [
                ("withdraw_delay", &t.withdraw_delay),
                ("min_deposit", &t.min_deposit),
            ]
            .into_iter()
            .find_map(|(key, v)| v.as_ref().map(|v| (key, v)))
            {
                return Err(self.err(
                    key.1,
                    format!(
                        "route `{route}` sets `{}`, which only scheme = \"batch-settlement\" reads",
                        key.0
                    ),
                ));
            }
        }
        let extra = if scheme == UPTO {
            upto_challenge_extra(&token_domain, None)
                .map_err(|e| self.error_at(span.clone(), e.to_string()))?
        } else if scheme == BATCH_SETTLEMENT {
            self.batch_extra(route, t, token_domain, amount, asset.decimals)?
        } else {
            token_domain
        };
        Ok(PaymentOption {
            requirements: PaymentRequirements {
                scheme,
                network: network.clone(),
                amount: amount.to_string(),
                asset: asset.address.clone(),
                pay_to,
                max_timeout_seconds,
                extra,
            },
            chain_id,
            v1_network,
            amount,
            asset_symbol: asset.symbol.clone(),
            decimals: asset.decimals,
            domain_separator: Default::default(),
        })
    }
}
