//! From the surface format to the validated model: every key is checked against every other,
//! and every problem names the file, line and column.

use super::duration::parse_duration;
use super::model::*;
use super::surface;
use super::surface::Text;
use crate::payment::{SettlementPolicy, PAYMENT_FLOW};
use crate::pricing::mcp::{McpItemKind, McpPricedItem, McpRoute};
use crate::pricing::{
    canonical_path, checksum_address, parse_price, Asset, AssetRegistry, PaymentOption,
    PriceCondition, PriceRule, PricedRoute, Route, RouteKind, RoutePattern, RouteTable,
};
use crate::x402::{chain_id_of, v1_name_of, PaymentRequirements};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use toml::Spanned;

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
const SCHEMES: &[&str] = &["exact", "aggr_deferred"];

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
        Ok(GatewayConfig {
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
        Ok(AdminConfig {
            listen,
            probe_interval: self.positive_duration(&a.probe_interval, Duration::from_secs(5))?,
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
        })
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
            RouteKind::Mcp(self.mcp_route(
                &source,
                &pattern,
                spanned,
                defaults,
                default_settle,
                assets,
            )?)
        } else {
            RouteKind::Priced(self.priced_route(
                &source,
                &pattern,
                spanned,
                defaults,
                default_settle,
                assets,
            )?)
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
        if route.has_inline_terms() || route.accepts.is_some() || route.price_rules.is_some() {
            return Err(self.err(
                spanned,
                format!("route `{source}` is `mcp = true`: price its items in [[routes.tools]], [[routes.resources]] or [[routes.prompts]], not the route"),
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
                let as_route = surface::Route {
                    pattern: route.pattern.clone(),
                    free: false,
                    description: e.description.clone().or_else(|| route.description.clone()),
                    mime_type: e.mime_type.clone().or_else(|| route.mime_type.clone()),
                    settle: e.settle.clone().or_else(|| route.settle.clone()),
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
                };
                let label = format!("{source} {kind_name} {name}");
                let as_route = Spanned::new(entry.span(), as_route);
                let priced = self.priced_route(
                    &label,
                    pattern,
                    &as_route,
                    defaults,
                    default_settle,
                    assets,
                )?;
                items.push(McpPricedItem { kind, name, priced });
            }
        }
        Ok(McpRoute { items })
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
        let mut priced = PricedRoute {
            options,
            description: self.opt(&route.description)?.unwrap_or_default(),
            mime_type: self
                .opt(&route.mime_type)?
                .unwrap_or_else(|| "application/json".into()),
            settle,
            sync_settle: route
                .sync_settle
                .as_ref()
                .or(defaults.sync_settle.as_ref())
                .is_some_and(|s| *s.get_ref()),
            challenge: Default::default(),
            price_rules: Vec::new(),
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
                format!("scheme `{scheme}` is not supported (\"exact\" or \"aggr_deferred\")"),
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

        Ok(PaymentOption {
            requirements: PaymentRequirements {
                scheme,
                network: network.clone(),
                amount: amount.to_string(),
                asset: asset.address.clone(),
                pay_to,
                max_timeout_seconds,
                extra: serde_json::json!({"name": asset.name, "version": asset.version}),
            },
            chain_id,
            v1_network: v1_name_of(&network),
            amount,
            asset_symbol: asset.symbol.clone(),
            decimals: asset.decimals,
            domain_separator: Default::default(),
        })
    }
}
