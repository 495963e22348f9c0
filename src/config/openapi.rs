//! OpenAPI documents and `gateway.toml`, both ways.
//!
//! [`gateway_toml`] turns an API's OpenAPI 3.0 or 3.1 description into a commented configuration
//! with one route per operation, so an operator starts from the API they already describe instead
//! of typing every path again. A price is never invented: an operation without one (and without a
//! default) is written commented out, and the file refuses what no route lists.
//!
//! [`document`] goes the other way: the priced route table a configuration resolves to, as an
//! OpenAPI 3.1 document whose operations carry the x402 terms their 402 answers would carry, so
//! buyers and tools that read OpenAPI see the prices without paying first.

use super::model::{GatewayConfig, UnmatchedPolicy};
use crate::pricing::{format_units, parse_price, MoneyError, PricedRoute, Route, RouteKind};
use serde_json::{json, Map, Value};
use serde_yaml::Value as Yaml;
use std::fmt::Write as _;
use std::path::Path;

/// The operation (or path item) extension naming a price, and its shorter alias.
pub const PRICE_EXTENSION: &str = "x-x402-price";
pub const PRICE_ALIAS: &str = "x-price";
/// The extension marking an operation (or every operation of a path item) free.
pub const FREE_EXTENSION: &str = "x-x402-free";
/// The extension listing the payment options of a priced operation in [`document`].
pub const ACCEPTS_EXTENSION: &str = "x-x402-accepts";

/// The upstream written when neither `--upstream` nor the document names an absolute one: the
/// shipped configuration's.
pub const DEFAULT_UPSTREAM: &str = "http://127.0.0.1:8080";

/// Decimals of the asset the generated file prices in (`[defaults] asset = "USDC"`): prices are
/// checked against it before anything is written.
const DEFAULT_DECIMALS: u8 = 6;

/// The HTTP methods an OpenAPI path item may hold an operation under, in the specification's order.
const OPERATION_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The methods a `*` route is described with: the ones an API is called with (`HEAD` is priced
/// like `GET`, and preflights go to the upstream unpriced).
const ANY_METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// Why an OpenAPI document or an `init` option cannot become a configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OpenApiError {
    #[error("{file}: {problem}")]
    Document { file: String, problem: Problem },
    #[error("--price `{price}`: {message}")]
    DefaultPrice { price: String, message: String },
    #[error("--upstream `{url}`: {message}")]
    Upstream { url: String, message: String },
}

/// What is wrong with the document itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    #[error("cannot read it: {0}")]
    Unreadable(String),
    #[error("is neither YAML nor JSON: {0}")]
    Syntax(String),
    #[error("is not an OpenAPI document (no top-level `openapi` version)")]
    NotOpenApi,
    #[error("is a Swagger {0} document; only OpenAPI 3.0 and 3.1 are read (convert it to OpenAPI 3 first)")]
    Swagger(String),
    #[error("declares OpenAPI `{0}`; only 3.0 and 3.1 are read")]
    Version(String),
    #[error("describes no operation under `paths`")]
    NoOperations,
    #[error("{operation}: `{key}` {message}")]
    Price {
        operation: String,
        key: &'static str,
        message: String,
    },
}

/// A document read into memory: its version and its tree.
#[derive(Debug, Clone)]
pub struct ApiDocument {
    /// Where it was read from, to name it in errors and in the generated file.
    pub file: String,
    /// The `openapi` field as written (`3.0.3`, `3.1.0`).
    pub version: String,
    root: Yaml,
}

/// What `init --from-openapi` was asked for besides the document.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// The price of operations that name none (`--price`).
    pub default_price: Option<String>,
    /// The API's address (`--upstream`), instead of the document's first server.
    pub upstream: Option<String>,
}

/// How one operation was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pricing {
    /// A priced route, with the price and where it came from.
    Priced { price: String, from: &'static str },
    /// A `free = true` route.
    Free { from: &'static str },
    /// No price and no default: written commented out.
    Unpriced,
}

/// One operation of the document and the route it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedRoute {
    /// The route's `match` string: `GET /v2/pet/:petId`.
    pub pattern: String,
    pub operation_id: Option<String>,
    pub pricing: Pricing,
}

/// A generated configuration: the file's text and what each operation became.
#[derive(Debug, Clone)]
pub struct Generated {
    pub text: String,
    pub routes: Vec<GeneratedRoute>,
    pub upstream: String,
}

impl ApiDocument {
    /// Reads `path` (YAML or JSON).
    pub fn read(path: &Path) -> Result<Self, OpenApiError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| OpenApiError::Document {
            file: file.clone(),
            problem: Problem::Unreadable(e.to_string()),
        })?;
        Self::parse(&text, &file)
    }

    /// Reads `text` as a document named `file`. JSON goes through the JSON reader (tabs and
    /// escapes as JSON has them), anything else through YAML.
    pub fn parse(text: &str, file: &str) -> Result<Self, OpenApiError> {
        let fail = |problem| OpenApiError::Document {
            file: file.to_string(),
            problem,
        };
        let mut root: Yaml = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| fail(Problem::Syntax(e.to_string())))?
        } else {
            serde_yaml::from_str(text).map_err(|e| fail(Problem::Syntax(e.to_string())))?
        };
        // `<<: *anchor` merges are common in hand-written YAML descriptions.
        root.apply_merge()
            .map_err(|e| fail(Problem::Syntax(e.to_string())))?;
        if !root.is_mapping() {
            return Err(fail(Problem::NotOpenApi));
        }
        if let Some(swagger) = root.get("swagger") {
            return Err(fail(Problem::Swagger(scalar_text(swagger))));
        }
        let version = root
            .get("openapi")
            .map(scalar_text)
            .ok_or_else(|| fail(Problem::NotOpenApi))?;
        let supported = ["3.0", "3.1"]
            .iter()
            .any(|v| version == *v || version.starts_with(&format!("{v}.")));
        if !supported {
            return Err(fail(Problem::Version(version)));
        }
        Ok(Self {
            file: file.to_string(),
            version,
            root,
        })
    }

    fn problem(&self, problem: Problem) -> OpenApiError {
        OpenApiError::Document {
            file: self.file.clone(),
            problem,
        }
    }

    fn info(&self, key: &str) -> Option<String> {
        self.root.get("info")?.get(key).map(scalar_text)
    }

    /// The first server's URL with its variables at their defaults.
    fn first_server(&self) -> Option<String> {
        let server = self.root.get("servers")?.get(0)?;
        let mut url = server.get("url")?.as_str()?.to_string();
        if let Some(Yaml::Mapping(variables)) = server.get("variables") {
            for (name, variable) in variables {
                if let (Some(name), Some(default)) = (name.as_str(), variable.get("default")) {
                    url = url.replace(&format!("{{{name}}}"), &scalar_text(default));
                }
            }
        }
        Some(url)
    }
}

/// A scalar as text (`3.1` read as a number is still the version `3.1`).
fn scalar_text(value: &Yaml) -> String {
    match value {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// What a price extension or `--price` says.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PriceValue {
    Free,
    Price(String),
}

/// Reads a price: `"$0.01"`, `0.01`, `"0.01"`, or `"free"` / zero for a free operation. The
/// price is checked against the generated file's asset so that a bad one stops `init` before
/// anything is written, naming the operation, rather than at `check`.
fn price_value(value: &Yaml) -> Result<PriceValue, String> {
    let text = match value {
        Yaml::String(s) => s.trim().to_string(),
        Yaml::Number(n) => n.to_string(),
        _ => return Err("must be a price such as \"$0.01\", or \"free\"".to_string()),
    };
    if text.eq_ignore_ascii_case("free") {
        return Ok(PriceValue::Free);
    }
    match parse_price(&text, DEFAULT_DECIMALS) {
        Ok(_) if text.starts_with('$') => Ok(PriceValue::Price(text)),
        Ok(_) => Ok(PriceValue::Price(format!("${text}"))),
        Err(MoneyError::Zero(_)) => Ok(PriceValue::Free),
        Err(e) => Err(format!("{e} (USDC has {DEFAULT_DECIMALS} decimals)")),
    }
}

/// The price an operation object or path item declares itself, if any.
fn declared_price(
    object: &Yaml,
    operation: &str,
    level: &'static str,
) -> Result<Option<(PriceValue, &'static str)>, Problem> {
    let bad = |key: &'static str, message: String| Problem::Price {
        operation: operation.to_string(),
        key,
        message,
    };
    let free = match object.get(FREE_EXTENSION) {
        None | Some(Yaml::Bool(false)) | Some(Yaml::Null) => false,
        Some(Yaml::Bool(true)) => true,
        Some(_) => return Err(bad(FREE_EXTENSION, "must be true or false".into())),
    };
    let (key, value) = match (object.get(PRICE_EXTENSION), object.get(PRICE_ALIAS)) {
        (Some(v), _) => (PRICE_EXTENSION, Some(v)),
        (None, Some(v)) => (PRICE_ALIAS, Some(v)),
        (None, None) => (PRICE_EXTENSION, None),
    };
    let price = value
        .map(price_value)
        .transpose()
        .map_err(|m| bad(key, m))?;
    match (free, price) {
        (true, Some(PriceValue::Price(p))) => Err(bad(
            FREE_EXTENSION,
            format!("is true but `{key}` is {p}: an operation is either free or priced"),
        )),
        (true, _) => Ok(Some((PriceValue::Free, level))),
        (false, Some(price)) => Ok(Some((price, level))),
        (false, None) => Ok(None),
    }
}

/// `--upstream`: an `http://` or `https://` origin (the gateway adds no path to what it proxies).
fn upstream_origin(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err("must be an origin with no path or query: request paths are proxied as they come, so the API's base path belongs in the routes".into());
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The origin and base path of an absolute `http(s)` server URL; `None` for a relative one.
fn split_server(url: &str) -> Option<(String, String)> {
    let parsed = url::Url::parse(url).ok()?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return None;
    }
    let origin = parsed.origin().ascii_serialization();
    Some((origin, parsed.path().trim_end_matches('/').to_string()))
}

/// An OpenAPI path template under `base` in the route syntax: `{petId}` becomes `:petId`; a
/// segment with a parameter inside other text (`{name}.json`) becomes `*` (any one segment),
/// since routes match whole segments. Whitespace in a literal is written `%20`, which matches the
/// same requests.
fn route_path(base: &str, template: &str) -> (String, bool) {
    let mut out = String::new();
    let mut widened = false;
    for segment in base.split('/').chain(template.split('/')) {
        if segment.is_empty() {
            continue;
        }
        out.push('/');
        let name = segment
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .filter(|n| !n.is_empty() && !n.contains(['{', '}']));
        match name {
            Some(name) => {
                out.push(':');
                out.push_str(name);
            }
            None if segment.contains('{') => {
                out.push('*');
                widened = true;
            }
            None => out.push_str(&segment.replace(char::is_whitespace, "%20")),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    (out, widened)
}

/// Text on one line, for comments and descriptions.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A TOML basic string with everything escaped.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The media type of the operation's success answer: `application/json` when offered, else the
/// first one of the first 2xx response.
fn success_media_type(operation: &Yaml) -> Option<String> {
    let Some(Yaml::Mapping(responses)) = operation.get("responses") else {
        return None;
    };
    let success = responses.iter().find_map(|(code, response)| {
        scalar_text(code)
            .to_ascii_uppercase()
            .starts_with('2')
            .then_some(response)
    })?;
    let Some(Yaml::Mapping(content)) = success.get("content") else {
        return None;
    };
    let types: Vec<String> = content
        .keys()
        .filter_map(|k| k.as_str())
        .map(String::from)
        .collect();
    types
        .iter()
        .find(|t| t.as_str() == "application/json")
        .or_else(|| types.first())
        .cloned()
}

/// Writes `line` padded so that its trailing comment lines up with the shipped file's.
fn commented(out: &mut String, line: &str, comment: &str) {
    let _ = writeln!(out, "{line:<34} # {comment}");
}

/// The configuration for `doc`: one route per operation, in document order.
pub fn gateway_toml(doc: &ApiDocument, options: &InitOptions) -> Result<Generated, OpenApiError> {
    let default_price = options
        .default_price
        .as_ref()
        .map(|p| {
            price_value(&Yaml::String(p.clone())).map_err(|message| OpenApiError::DefaultPrice {
                price: p.clone(),
                message,
            })
        })
        .transpose()?;
    let server = doc.first_server();
    let (server_origin, base_path) = match server.as_deref() {
        Some(url) => match split_server(url) {
            Some((origin, path)) => (Some(origin), path),
            None if url.starts_with('/') => (None, url.trim_end_matches('/').to_string()),
            None => (None, String::new()),
        },
        None => (None, String::new()),
    };
    let (upstream, upstream_note) = match &options.upstream {
        Some(url) => (
            upstream_origin(url).map_err(|message| OpenApiError::Upstream {
                url: url.clone(),
                message,
            })?,
            "--upstream".to_string(),
        ),
        None => match &server_origin {
            Some(origin) => (origin.clone(), "servers[0].url of the document".to_string()),
            None => (
                DEFAULT_UPSTREAM.to_string(),
                "the API's address: the document names no absolute server".to_string(),
            ),
        },
    };

    let mut routes = Vec::new();
    let mut body = String::new();
    let Some(Yaml::Mapping(paths)) = doc.root.get("paths") else {
        return Err(doc.problem(Problem::NoOperations));
    };
    for (template, item) in paths {
        let Some(template) = template.as_str() else {
            continue;
        };
        if item.get("$ref").is_some() {
            let _ = writeln!(
                body,
                "\n# {template}: a `$ref` path item, not followed; add its routes by hand.",
            );
            continue;
        }
        let (path, widened) = route_path(&base_path, template);
        let item_price =
            declared_price(item, template, "the path item").map_err(|p| doc.problem(p))?;
        for (method, operation) in item
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
            .filter(|(k, _)| OPERATION_METHODS.contains(k))
        {
            let pattern = format!("{} {path}", method.to_ascii_uppercase());
            let name = format!("{} {template}", method.to_ascii_uppercase());
            let own =
                declared_price(operation, &name, "the operation").map_err(|p| doc.problem(p))?;
            let chosen = own
                .or_else(|| item_price.clone())
                .or_else(|| default_price.clone().map(|p| (p, "--price")));
            let pricing = match chosen {
                Some((PriceValue::Price(price), from)) => Pricing::Priced { price, from },
                Some((PriceValue::Free, from)) => Pricing::Free { from },
                None => Pricing::Unpriced,
            };
            let operation_id = operation.get("operationId").map(scalar_text);
            let description = ["summary", "description"]
                .iter()
                .filter_map(|k| operation.get(*k).map(scalar_text))
                .map(|t| one_line(&t))
                .find(|t| !t.is_empty());
            write_route(
                &mut body,
                &pattern,
                operation_id.as_deref(),
                description.as_deref(),
                success_media_type(operation).as_deref(),
                &pricing,
                widened.then_some(template),
            );
            routes.push(GeneratedRoute {
                pattern,
                operation_id,
                pricing,
            });
        }
    }
    if routes.is_empty() {
        return Err(doc.problem(Problem::NoOperations));
    }

    let mut text = String::new();
    write_head(&mut text, doc, &routes, &upstream, &upstream_note);
    text.push_str(&body);
    Ok(Generated {
        text,
        routes,
        upstream,
    })
}

fn write_head(
    out: &mut String,
    doc: &ApiDocument,
    routes: &[GeneratedRoute],
    upstream: &str,
    upstream_note: &str,
) {
    let count = |f: fn(&Pricing) -> bool| routes.iter().filter(|r| f(&r.pricing)).count();
    let priced = count(|p| matches!(p, Pricing::Priced { .. }));
    let free = count(|p| matches!(p, Pricing::Free { .. }));
    let unpriced = count(|p| matches!(p, Pricing::Unpriced));
    let title = doc.info("title").map(|t| one_line(&t)).unwrap_or_default();
    let version = doc
        .info("version")
        .map(|t| one_line(&t))
        .unwrap_or_default();
    let _ = write!(
        out,
        r#"# x402-gateway configuration made by `x402-gateway init --from-openapi` from
# {file} ("{title}" {version}, OpenAPI {openapi}): {total} operations, {priced} priced, {free} free,
# {unpriced} without a price (written commented out below: price them or make them free).
#
# Prices come from each operation's `{PRICE_EXTENSION}` (or `{PRICE_ALIAS}`), else its path item's, else
# `--price`; `{FREE_EXTENSION}: true` (or a price of "free" or zero) makes an operation free.
#
# As written this file runs with no network: the test-mode `local` facilitator checks every
# payment but moves no money, and `pay_to` is a well-known public test account. For production,
# set [defaults] pay_to to your address and [facilitator] to a real facilitator, then run
# `x402-gateway check`. The commented reference of every key is the gateway.toml shipped with
# the gateway.

# Requests no route below matches are refused (404): every operation of the API is listed here,
# priced or free, so nothing the document does not describe reaches the API unpaid.
unmatched = "deny"

[server]
listen = "127.0.0.1:8402"          # "0.0.0.0:8402" to accept connections from other hosts
# public_url = "https://api.example.com"   # base of the resource URLs in challenges

[admin]
listen = "127.0.0.1:9402"          # /healthz, /readyz, /metrics; keep it off the public network

[upstream]
"#,
        file = one_line(&doc.file),
        openapi = doc.version,
        total = routes.len(),
    );
    commented(
        out,
        &format!("url = {}", toml_string(upstream)),
        upstream_note,
    );
    out.push_str(
        r#"
[facilitator]
kind = "local"                     # TEST MODE: no money moves; "x402" with url = "https://x402.org/facilitator"

[defaults]
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"   # a well-known public test account: replace it
network = "eip155:84532"           # CAIP-2: Base Sepolia
scheme = "exact"
asset = "USDC"
max_timeout_seconds = 300
settle = "after-success"           # or "before": settle, then call the upstream
"#,
    );
}

fn write_route(
    out: &mut String,
    pattern: &str,
    operation_id: Option<&str>,
    description: Option<&str>,
    mime_type: Option<&str>,
    pricing: &Pricing,
    widened: Option<&str>,
) {
    out.push('\n');
    if let Some(id) = operation_id {
        let _ = writeln!(out, "# operationId: {}", one_line(id));
    }
    if let Some(template) = widened {
        let _ = writeln!(
            out,
            "# {template}: a parameter inside a segment is matched as `*` (any one segment)"
        );
    }
    match pricing {
        Pricing::Priced { price, from } => {
            out.push_str("[[routes]]\n");
            let _ = writeln!(out, "match = {}", toml_string(pattern));
            commented(
                out,
                &format!("price = {}", toml_string(price)),
                from_note(from),
            );
            if let Some(d) = description {
                let _ = writeln!(out, "description = {}", toml_string(d));
            }
            if let Some(m) = mime_type {
                let _ = writeln!(out, "mime_type = {}", toml_string(m));
            }
        }
        Pricing::Free { from } => {
            if let Some(d) = description {
                let _ = writeln!(out, "# {d}");
            }
            out.push_str("[[routes]]\n");
            let _ = writeln!(out, "match = {}", toml_string(pattern));
            commented(out, "free = true", from_note(from));
        }
        Pricing::Unpriced => {
            let _ = writeln!(
                out,
                "# NOT PRICED: no `{PRICE_EXTENSION}` on the operation or its path item, and no --price."
            );
            out.push_str(
                "# Set a price (or `free = true`) and uncomment; until then it is refused (404).\n",
            );
            out.push_str("# [[routes]]\n");
            let _ = writeln!(out, "# match = {}", toml_string(pattern));
            out.push_str("# price = \"$0.01\"\n");
            if let Some(d) = description {
                let _ = writeln!(out, "# description = {}", toml_string(d));
            }
            if let Some(m) = mime_type {
                let _ = writeln!(out, "# mime_type = {}", toml_string(m));
            }
        }
    }
}

fn from_note(from: &str) -> &'static str {
    match from {
        "the operation" => "from the operation",
        "the path item" => "from the path item",
        _ => "--price",
    }
}

/// The configuration's routes as an OpenAPI 3.1 document: one operation per route and method,
/// `:param` (and each `*`, named `var1`, `var2`, ... as in Bazaar templates) as a declared path
/// parameter, `**` as a `{rest}` parameter standing for the rest of the path. Priced operations
/// carry `x-x402-price` (the first option's price) and `x-x402-accepts` (every option exactly as
/// its 402 lists it); free ones carry neither. Built from the resolved route table, so it says
/// what the gateway enforces, and holds nothing secret: requirements, descriptions and the
/// public URL only.
pub fn document(config: &GatewayConfig) -> Value {
    let mut paths: Map<String, Value> = Map::new();
    let routes = config.routes.in_file_order();
    for route in &routes {
        let (method, path) = route
            .source
            .split_once(char::is_whitespace)
            .unwrap_or(("*", &route.source));
        let (template, parameters) = openapi_path(path.trim());
        let methods: Vec<String> = if method == "*" {
            ANY_METHODS.iter().map(|m| m.to_string()).collect()
        } else {
            vec![method.to_ascii_lowercase()]
        };
        for method in methods {
            // Methods OpenAPI has no field for cannot be described.
            if !OPERATION_METHODS.contains(&method.as_str()) {
                continue;
            }
            let item = paths
                .entry(template.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(item) = item else { continue };
            // The first route for a path and method is the one requests reach (file order wins
            // among equally specific routes).
            if item.contains_key(&method) {
                continue;
            }
            item.insert(method.clone(), operation(route, &method, &parameters));
        }
    }
    let title = routes
        .iter()
        .flat_map(|r| r.kind.priced_routes())
        .find_map(|p| p.discovery.as_ref()?.service.service_name.clone())
        .unwrap_or_else(|| "x402-gateway".to_string());
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Routes of an x402 payment gateway. Priced operations answer 402 with a PAYMENT-REQUIRED header until paid; `{ACCEPTS_EXTENSION}` lists the payment options each accepts.{}",
                if config.unmatched == UnmatchedPolicy::Proxy { " Paths not listed are passed to the API free." } else { " Paths not listed are refused." }
            ),
        },
        "paths": paths,
    });
    if let (Some(url), Some(obj)) = (&config.server.public_url, doc.as_object_mut()) {
        obj.insert("servers".into(), json!([{"url": url}]));
    }
    doc
}

/// A `match` path as an OpenAPI template, with its path parameters declared.
fn openapi_path(path: &str) -> (String, Vec<Value>) {
    let mut template = String::new();
    let mut parameters = Vec::new();
    let mut wildcards = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        template.push('/');
        let (name, description) = match segment {
            "**" => (
                "rest".to_string(),
                "The rest of the path: any number of segments (the route matches `**`).",
            ),
            "*" => {
                wildcards += 1;
                (
                    format!("var{wildcards}"),
                    "Any one path segment (the route matches `*`).",
                )
            }
            s => match s.strip_prefix(':').filter(|n| !n.is_empty()) {
                Some(name) => (name.to_string(), ""),
                None => {
                    template.push_str(s);
                    continue;
                }
            },
        };
        let _ = write!(template, "{{{name}}}");
        let mut parameter = json!({
            "name": name, "in": "path", "required": true, "schema": {"type": "string"},
        });
        if let (false, Some(obj)) = (description.is_empty(), parameter.as_object_mut()) {
            obj.insert("description".into(), description.into());
        }
        parameters.push(parameter);
    }
    if template.is_empty() {
        template.push('/');
    }
    (template, parameters)
}

/// The price of an option as an operator writes it: `$` and whole tokens.
fn human_price(priced: &PricedRoute) -> Option<String> {
    let first = priced.options.first()?;
    Some(format!("${}", format_units(first.amount, first.decimals)))
}

/// The x402 extensions of one price: the human price, every option as its 402 lists it, and what
/// changes it (price rules, metering, access window).
fn price_extensions(priced: &PricedRoute, into: &mut Map<String, Value>) {
    if let Some(price) = human_price(priced) {
        into.insert(PRICE_EXTENSION.into(), price.into());
    }
    let accepts: Vec<Value> = priced
        .options
        .iter()
        .filter_map(|o| serde_json::to_value(&o.requirements).ok())
        .collect();
    into.insert(ACCEPTS_EXTENSION.into(), accepts.into());
    into.insert("x-x402-settle".into(), priced.settle.as_str().into());
    if !priced.price_rules.is_empty() {
        let rules: Vec<Value> = priced
            .price_rules
            .iter()
            .map(|rule| {
                json!({
                    "when": rule.condition.to_json(),
                    "x-x402-price": human_price(&rule.priced),
                    "accepts": rule.priced.options.iter().filter_map(|o| serde_json::to_value(&o.requirements).ok()).collect::<Vec<_>>(),
                })
            })
            .collect();
        into.insert("x-x402-price-rules".into(), rules.into());
    }
    if let (Some(metering), Some(first)) = (&priced.metering, priced.options.first()) {
        into.insert("x-x402-metering".into(), metering.describe(first.decimals));
    }
    if let Some(window) = priced.access {
        into.insert("x-x402-access-seconds".into(), window.as_secs().into());
    }
}

fn operation(route: &Route, method: &str, parameters: &[Value]) -> Value {
    let mut op = Map::new();
    op.insert("x-x402-route".into(), route.source.clone().into());
    if !parameters.is_empty() {
        op.insert("parameters".into(), parameters.to_vec().into());
    }
    let challenge = json!({
        "description": "Payment required: the PAYMENT-REQUIRED header carries the x402 challenge (base64 JSON); pay with a PAYMENT-SIGNATURE header.",
        "headers": {"PAYMENT-REQUIRED": {"schema": {"type": "string"}}},
    });
    match &route.kind {
        RouteKind::Free => {}
        RouteKind::Priced(priced) => {
            if !priced.description.is_empty() {
                op.insert("summary".into(), priced.description.clone().into());
            }
            price_extensions(priced, &mut op);
            let success = json!({
                "description": "The API's answer, with a PAYMENT-RESPONSE header carrying the settlement.",
                "content": {priced.mime_type.clone(): {}},
            });
            let success_code = if method == "post" { "2XX" } else { "200" };
            op.insert(
                "responses".into(),
                json!({success_code: success, "402": challenge}),
            );
        }
        RouteKind::Mcp(mcp) => {
            op.insert(
                "summary".into(),
                "MCP server (Streamable HTTP): priced per tool, resource and prompt".into(),
            );
            let items: Vec<Value> = mcp
                .items
                .iter()
                .map(|item| {
                    let mut entry = Map::new();
                    entry.insert("kind".into(), item.kind.as_str().into());
                    entry.insert("name".into(), item.name.clone().into());
                    price_extensions(&item.priced, &mut entry);
                    Value::Object(entry)
                })
                .collect();
            op.insert("x-x402-mcp".into(), items.into());
            op.insert("responses".into(), json!({"402": challenge}));
        }
    }
    Value::Object(op)
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
