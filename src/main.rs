//! The `x402-gateway` command: wiring only. Parsing, validation and proxying live in the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use x402_gateway::config::{
    openapi, primary_facilitator, FacilitatorConfig, FacilitatorKind, GatewayConfig,
    UnmatchedPolicy,
};
use x402_gateway::facilitator::{fee_tiers_for, preflight, Facilitators};
use x402_gateway::pricing::{format_units, quote_fee, FeeTier, PricedRoute, RouteKind};
use x402_gateway::proxy::{build_server, GatewayState};

#[derive(Parser)]
#[command(
    name = "x402-gateway",
    version,
    about = "Pay-per-request x402 gateway in front of any HTTP API"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Also serve a small demo API on the configured upstream address (loopback only).
        #[arg(long)]
        demo_upstream: bool,
    },
    /// Validate a configuration and print the resolved route table.
    Check {
        /// Configuration file.
        #[arg(default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Write a gateway.toml from an OpenAPI 3.0 or 3.1 document, one route per operation.
    ///
    /// The document is YAML or JSON. An operation's price is its `x-x402-price` (or `x-price`)
    /// extension, else its path item's, else --price; `x-x402-free: true` (or a price of "free"
    /// or zero) makes it free. Operations without a price are written commented out, never
    /// priced by guess. The written file is then checked as `check` does.
    Init {
        /// The OpenAPI document.
        #[arg(long = "from-openapi", value_name = "FILE")]
        from_openapi: PathBuf,
        /// The price of operations that name none ("$0.01"; "free" makes them free).
        #[arg(long, value_name = "PRICE")]
        price: Option<String>,
        /// Where to write the configuration.
        #[arg(long, value_name = "PATH", default_value = "gateway.toml")]
        out: PathBuf,
        /// The API's address (http:// or https://, no path), instead of the document's first
        /// absolute server (else http://127.0.0.1:8080).
        #[arg(long, value_name = "URL")]
        upstream: Option<String>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Print the configured routes as an OpenAPI 3.1 JSON document.
    ///
    /// Each priced operation carries its price as `x-x402-price` and the payment options its 402
    /// lists as `x-x402-accepts`; free routes carry neither.
    Openapi {
        /// Configuration file.
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// List the batch-settlement channels the gateway keeps: what each buyer was charged, what is
    /// claimed on chain, and the unclaimed value at stake. Reads the store the configuration
    /// names (`[redis]`, else the `[journal] url` database).
    Channels {
        /// Configuration file.
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReceiptsFormat::Csv)]
        format: ReceiptsFormat,
    },
    /// List the live access grants (routes with `access`): which wallet may sign in to which
    /// resource, and until when. Reads the store the configuration names (`[redis]`, else the
    /// `[journal] url` database).
    Grants {
        /// Configuration file.
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReceiptsFormat::Csv)]
        format: ReceiptsFormat,
    },
    /// List the payments recorded in the settlement journal, one row per payment.
    Receipts {
        /// Configuration file naming the journal (`[journal] url` for the database every
        /// replica shares, else `[journal] path`).
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// The journal file itself (instead of reading it from the configuration).
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Only payments first recorded at or after this time: unix seconds, an RFC 3339 UTC
        /// time, a date, or a duration back from now ("24h").
        #[arg(long)]
        since: Option<String>,
        /// Only payments on this route, as in the logs and metrics ("GET /paid").
        #[arg(long)]
        route: Option<String>,
        /// Only payments from this payer address.
        #[arg(long)]
        payer: Option<String>,
        /// Only payments in this latest state.
        #[arg(long, value_enum)]
        state: Option<ReceiptState>,
        /// Only refund candidates: settled payments whose answer did not reach the buyer whole
        /// (a stream the upstream cut, `upstream_body_cut`; settled up front, an upstream that
        /// failed or answered an error).
        #[arg(long)]
        refund_candidates: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReceiptsFormat::Csv)]
        format: ReceiptsFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReceiptState {
    Verified,
    Settled,
    Pending,
    Failed,
    NotCharged,
}

#[derive(Clone, Copy, ValueEnum)]
enum ReceiptsFormat {
    Csv,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // Pingora logs through the `log` crate.
    let _ = tracing_log::LogTracer::init();
}

// Fewer instructions per allocation than glibc's malloc on the request path, and no per-thread
// arenas growing apart under many idle connections.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            config,
            demo_upstream,
        } => run(config, demo_upstream),
        Command::Check { config } => check(config),
        Command::Init {
            from_openapi,
            price,
            out,
            upstream,
            force,
        } => init(&from_openapi, price, upstream, &out, force),
        Command::Openapi { config } => {
            let config = GatewayConfig::load(&config).map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&openapi::document(&config))?
            );
            Ok(())
        }
        Command::Channels { config, format } => channels(config, format),
        Command::Grants { config, format } => grants(config, format),
        Command::Receipts {
            config,
            journal,
            since,
            route,
            payer,
            state,
            refund_candidates,
            format,
        } => {
            use x402_gateway::ops::PaymentState as S;
            let state = state.map(|s| match s {
                ReceiptState::Verified => S::Verified,
                ReceiptState::Settled => S::Settled,
                ReceiptState::Pending => S::Pending,
                ReceiptState::Failed => S::Failed,
                ReceiptState::NotCharged => S::NotCharged,
            });
            let now_ms = x402_gateway::time::unix_now_ms();
            let since_ms = since
                .map(|s| x402_gateway::ops::journal::parse_since(&s, now_ms))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--since {e}"))?;
            let query = x402_gateway::ops::receipts::ReceiptQuery {
                since_ms,
                until_ms: None,
                route,
                payer,
                state,
                refund_candidates,
                page: None,
            };
            receipts(config, journal, &query, format)
        }
    }
}

fn run(path: PathBuf, demo_upstream: bool) -> Result<()> {
    let mut config = GatewayConfig::load(&path).map_err(anyhow::Error::msg)?;
    if demo_upstream {
        start_demo_upstream(&config)?;
    }
    let listen = config.server.listen;
    let route_count = config.routes.in_file_order().len();
    let facilitators: Vec<String> = config
        .facilitators
        .iter()
        .map(|f| format!("{} ({})", f.name, f.kind.as_str()))
        .collect();
    check_facilitators(&config)?;
    resolve_upto_settlers(&mut config)?;
    let admin = config.admin.listen;
    let state = GatewayState::new(config).context("cannot start")?;
    let server = build_server(state).context("cannot start")?;
    tracing::info!(%listen, %admin, routes = route_count, facilitators = %facilitators.join(", "), "x402-gateway listening");
    server.run();
    Ok(())
}

fn channels(config: PathBuf, format: ReceiptsFormat) -> Result<()> {
    use x402_gateway::store::{ChannelStore, PostgresChannels, RedisChannels, RedisStore};
    let loaded = GatewayConfig::load(&config).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store: std::sync::Arc<dyn ChannelStore> = match (&loaded.redis, &loaded.journal) {
        (Some(redis), _) => {
            let shared = std::sync::Arc::new(
                RedisStore::connect(redis).context("cannot connect to the [redis] store")?,
            );
            std::sync::Arc::new(RedisChannels::new(shared))
        }
        (None, Some(journal)) if journal.url.is_some() => {
            let url = journal.url.as_ref().map(|u| u.expose().to_string()).unwrap_or_default();
            std::sync::Arc::new(
                runtime
                    .block_on(PostgresChannels::connect(&url))
                    .context("cannot open the channels of the journal database")?,
            )
        }
        _ => anyhow::bail!(
            "{} keeps batch-settlement channels in the gateway's memory (no [redis] and no [journal] url): only the running gateway knows them; its /metrics show x402_batch_channels and x402_batch_unclaimed_atomic",
            config.display()
        ),
    };
    let now_ms = u64::try_from(x402_gateway::time::unix_now_ms()).unwrap_or_default();
    let rows = runtime
        .block_on(x402_gateway::ops::claims::list_channels(
            store.as_ref(),
            now_ms,
        ))
        .context("cannot list the channels")?;
    match format {
        ReceiptsFormat::Csv => print!("{}", x402_gateway::ops::claims::channels_csv(&rows)),
        ReceiptsFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(())
}

fn grants(config: PathBuf, format: ReceiptsFormat) -> Result<()> {
    use x402_gateway::store::{PostgresChannels, RedisSignIn, RedisStore, SignInStore};
    let loaded = GatewayConfig::load(&config).map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store: Box<dyn SignInStore> = match (&loaded.redis, &loaded.journal) {
        (Some(redis), _) => Box::new(RedisSignIn::new(std::sync::Arc::new(
            RedisStore::connect(redis).context("cannot connect to the [redis] store")?,
        ))),
        (None, Some(journal)) if journal.url.is_some() => {
            let url = journal.url.as_ref().map(|u| u.expose().to_string()).unwrap_or_default();
            let database = runtime
                .block_on(PostgresChannels::connect(&url))
                .context("cannot open the journal database")?;
            Box::new(database.sign_in())
        }
        _ => anyhow::bail!(
            "{} has no [redis] and no [journal] url: access grants are kept in the gateway's memory and only the running gateway knows them",
            config.display()
        ),
    };
    let now_ms = x402_gateway::time::unix_now_ms();
    let mut rows = runtime
        .block_on(store.grants(now_ms))
        .context("cannot list the access grants")?;
    rows.sort_by(|a, b| (&a.resource, &a.payer).cmp(&(&b.resource, &b.payer)));
    match format {
        ReceiptsFormat::Csv => {
            println!("resource,payer,until");
            for g in &rows {
                // A resource is a route label and a path: quoted, as it may hold commas.
                println!(
                    "\"{}\",{},{}",
                    g.resource.replace('"', "\"\""),
                    g.payer,
                    x402_gateway::time::rfc3339(g.until_ms)
                );
            }
        }
        ReceiptsFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
    }
    Ok(())
}

fn receipts(
    config: PathBuf,
    journal: Option<PathBuf>,
    query: &x402_gateway::ops::receipts::ReceiptQuery,
    format: ReceiptsFormat,
) -> Result<()> {
    use x402_gateway::ops::{journal as j, receipts as r};
    let format = match format {
        ReceiptsFormat::Csv => r::ReceiptFormat::Csv,
        ReceiptsFormat::Json => r::ReceiptFormat::Json,
    };
    let path = match journal {
        Some(path) => path,
        None => {
            let journal = GatewayConfig::load(&config)
                .map_err(anyhow::Error::msg)?
                .journal
                .with_context(|| {
                    format!("{} has no [journal]; pass --journal PATH", config.display())
                })?;
            if let Some(url) = journal.url {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let rows = runtime
                    .block_on(j::PgJournal::read_receipts(url.expose(), query))
                    .context("cannot read receipts from the journal database")?;
                print!("{}", r::render(&rows, format));
                return Ok(());
            }
            journal.path
        }
    };
    let entries = j::read_entries(&path)?;
    print!("{}", r::render(&r::receipts(&entries, query), format));
    Ok(())
}

/// Asks the vendor facilitators what they support before serving, on a runtime of its own (the
/// proxy's runtimes do not exist yet); clients made here are dropped with it.
fn check_facilitators(config: &GatewayConfig) -> Result<()> {
    let vendors = config
        .facilitators
        .iter()
        .any(|f| matches!(f.kind, FacilitatorKind::Okx | FacilitatorKind::AgentWallex));
    if !vendors {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let facilitators =
            Facilitators::from_config(&config.facilitators).context("cannot start")?;
        let report = preflight(config, &facilitators)
            .await
            .context("cannot start")?;
        for warning in report.warnings {
            tracing::warn!("{warning}");
        }
        for f in &config.facilitators {
            match fee_tiers_for(f).await {
                Some(Ok(tiers)) => {
                    let tiers: Vec<String> = tiers.iter().map(describe_tier).collect();
                    tracing::info!(facilitator = %f.name, tiers = %tiers.join("; "), "fee tiers");
                }
                Some(Err(e)) => {
                    tracing::warn!(facilitator = %f.name, error = %e, "fee tiers unavailable")
                }
                None => {}
            }
        }
        Ok(())
    })
}

/// Reads, once, the address each facilitator settles `upto` payments from, into the metered
/// routes' requirements (on a runtime of its own, like the checks above). A facilitator that
/// cannot tell leaves its metered routes refusing payments (503) until a reload or restart.
fn resolve_upto_settlers(config: &mut GatewayConfig) -> Result<()> {
    let needs_facilitator_address = |p: &x402_gateway::pricing::PricedRoute| {
        p.metering.is_some()
            || p.options
                .iter()
                .any(|o| o.requirements.scheme == x402_gateway::payment::batch::BATCH_SETTLEMENT)
    };
    let metered = config.routes.in_file_order().iter().any(|r| {
        r.kind.priced_routes().any(|p| {
            needs_facilitator_address(p)
                || p.price_rules
                    .iter()
                    .any(|r| needs_facilitator_address(&r.priced))
        })
    });
    if !metered {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let facilitators =
            Facilitators::from_config(&config.facilitators).context("cannot start")?;
        let report = x402_gateway::facilitator::resolve_upto_settlers(
            config,
            &facilitators,
            &Default::default(),
        )
        .await;
        for network in report.missing {
            tracing::warn!(%network, "no facilitator named an address that settles `upto` payments on this network; its metered routes answer 503 until a reload");
        }
        for network in report.missing_authorizers {
            tracing::warn!(%network, "no facilitator named a `batch-settlement` receiver authorizer on this network; its channel routes answer 503 until a reload");
        }
        Ok(())
    })
}

fn describe_tier(tier: &FeeTier) -> String {
    match &tier.max {
        Some(max) => format!("{}% from ${} to ${}", tier.percentage, tier.min, max),
        None => format!("{}% from ${}", tier.percentage, tier.min),
    }
}

fn describe_facilitator(f: &FacilitatorConfig) -> String {
    let mut text = format!("{} ({})", f.name, f.kind.as_str());
    match f.kind {
        FacilitatorKind::Local => text.push_str(" TEST MODE: no money moves"),
        _ => {
            text.push(' ');
            text.push_str(f.url.as_deref().unwrap_or_default());
        }
    }
    if let Some(okx) = &f.okx {
        let api = match okx.api {
            x402_gateway::config::OkxApi::V2 => "v2",
            x402_gateway::config::OkxApi::Legacy => "legacy",
        };
        text.push_str(&format!(", api {api}"));
    }
    if !f.networks.is_empty() {
        text.push_str(&format!(", networks {}", f.networks.join(" ")));
    }
    if let Some(fallback) = &f.fallback {
        text.push_str(&format!(", fallback {fallback}"));
    }
    text
}

fn start_demo_upstream(config: &GatewayConfig) -> Result<()> {
    let upstream = &config.upstream;
    let addr: std::net::SocketAddr = format!("{}:{}", upstream.host, upstream.port)
        .parse()
        .context(
            "--demo-upstream needs an upstream url with an IP address, e.g. http://127.0.0.1:8080",
        )?;
    if !addr.ip().is_loopback() {
        bail!("--demo-upstream only serves on a loopback address, not {addr}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("demo upstream cannot listen on {addr}"))?;
    drop(listener);
    std::thread::spawn(move || {
        if let Err(e) = runtime.block_on(x402_gateway::demo::serve_demo_upstream(addr)) {
            tracing::error!(error = %e, "demo upstream stopped");
        }
    });
    Ok(())
}

/// `init --from-openapi`: nothing is written unless the whole document converts, an existing file
/// is kept unless `--force`, and the written file is checked at once so that its route table (or
/// what is wrong with it) is the first thing the operator sees.
fn init(
    document: &std::path::Path,
    price: Option<String>,
    upstream: Option<String>,
    out: &std::path::Path,
    force: bool,
) -> Result<()> {
    use std::io::Write as _;
    let doc = openapi::ApiDocument::read(document)?;
    let options = openapi::InitOptions {
        default_price: price,
        upstream,
    };
    let generated = openapi::gateway_toml(&doc, &options)?;
    let mut file = if force {
        std::fs::File::create(out)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(out)
    }
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} exists already; pass --force to overwrite it, or --out to write elsewhere",
            out.display()
        ),
        _ => anyhow::anyhow!("cannot write {}: {e}", out.display()),
    })?;
    file.write_all(generated.text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", out.display()))?;
    let unpriced: Vec<&str> = generated
        .routes
        .iter()
        .filter(|r| r.pricing == openapi::Pricing::Unpriced)
        .map(|r| r.pattern.as_str())
        .collect();
    println!(
        "wrote {} from {}: {} routes, upstream {}",
        out.display(),
        document.display(),
        generated.routes.len() - unpriced.len(),
        generated.upstream
    );
    for pattern in &unpriced {
        println!(
            "not priced (commented out): {pattern}: add x-x402-price to the operation, or pass --price"
        );
    }
    println!();
    check(out.to_path_buf())
}

fn check(path: PathBuf) -> Result<()> {
    let config = GatewayConfig::load(&path).map_err(anyhow::Error::msg)?;
    println!("{}: OK", path.display());
    println!("upstream     {}", config.upstream.url);
    for f in &config.facilitators {
        println!("facilitator  {}", describe_facilitator(f));
    }
    // Fee schedules are published by the facilitator: ask once per facilitator that has one.
    let mut fees: Vec<Option<std::result::Result<Vec<FeeTier>, String>>> = Vec::new();
    if config
        .facilitators
        .iter()
        .any(|f| f.kind == FacilitatorKind::AgentWallex)
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for f in &config.facilitators {
            let tiers = runtime.block_on(fee_tiers_for(f));
            if let Some(Err(e)) = &tiers {
                println!("fees         {}: unavailable ({e})", f.name);
            }
            fees.push(tiers.map(|t| t.map_err(|e| e.to_string())));
        }
    }
    println!("unmatched    {:?}", config.unmatched);
    println!(
        "admin        {} (/healthz, /readyz, /metrics, /admin/api/, /console; {})",
        config.admin.listen,
        if config.admin.token.is_some() {
            "admin API with its token"
        } else {
            "no token: admin API on loopback only"
        }
    );
    match &config.journal {
        Some(j) if j.url.is_some() => println!(
            "journal      PostgreSQL ([journal] url), spool {}",
            j.path.display()
        ),
        Some(j) => println!("journal      {}", j.path.display()),
        None => println!("journal      none (payments are only logged)"),
    }
    match &config.redis {
        Some(r) => println!(
            "redis        {} (prefix {:?}, timeout {:?})",
            r.display_url(),
            r.key_prefix,
            r.timeout
        ),
        None => println!(
            "redis        none (replay guard, idempotency and rate limits are per process)"
        ),
    }
    println!(
        "discovery    {}",
        if config.discovery {
            "/.well-known/x402"
        } else {
            "off"
        }
    );
    println!();
    for route in config.routes.in_file_order() {
        match &route.kind {
            RouteKind::Free => println!("{:<32} free", route.source),
            RouteKind::Priced(priced) => print_prices(&route.source, priced, &config, &fees),
            RouteKind::Mcp(mcp) => {
                println!(
                    "{:<32} mcp: {} priced item(s); every other tool, resource and prompt is free",
                    route.source,
                    mcp.items.len()
                );
                for item in &mcp.items {
                    print_prices(&format!("  {}", item.label()), &item.priced, &config, &fees);
                }
            }
        }
    }
    if config.unmatched == UnmatchedPolicy::Proxy {
        for route in config.routes.priced_for_some_methods() {
            println!(
                "warning: `{}` (route {}) prices only the method it names; with unmatched = \"proxy\" every other method on this path reaches the upstream free (and an upstream that reads a `_method` body field may serve it as the priced one): set unmatched = \"deny\" or add a `*` route for the path",
                route.source,
                route.index + 1
            );
        }
    }
    let overlaps = config.routes.overlaps();
    if !overlaps.is_empty() {
        println!();
        for (winner, shadowed) in overlaps {
            println!(
                "overlap: `{}` (route {}) and `{}` (route {}) can match the same request; `{}` wins",
                winner.source,
                winner.index + 1,
                shadowed.source,
                shadowed.index + 1,
                winner.source
            );
        }
    }
    Ok(())
}

/// Where a metered route's charge comes from, in `check`'s words.
fn describe_usage(
    metering: &x402_gateway::pricing::Metering,
    symbol: &str,
    decimals: u8,
) -> String {
    use x402_gateway::pricing::Meter;
    if let Some(body) = &metering.body {
        return format!(
            "usage_json `{}` (JSON body or last server-sent event) × unit price {} {symbol} ({})",
            body.path,
            body.unit_amount,
            format_units(body.unit_amount, decimals)
        );
    }
    match &metering.header {
        Some(h) => match h.meter {
            Meter::PerUnit { unit_amount } => format!(
                "usage header `{}` × unit price {unit_amount} {symbol} ({})",
                h.name,
                format_units(unit_amount, decimals)
            ),
            Meter::Absolute => format!("amount header `{}` (atomic units)", h.name),
        },
        None => "no usage source (the fallback)".to_string(),
    }
}

/// `check`'s lines for one price: each option, its fee, and its price rules.
fn print_prices(
    label: &str,
    priced: &PricedRoute,
    config: &GatewayConfig,
    fees: &[Option<std::result::Result<Vec<FeeTier>, String>>],
) {
    for (i, option) in priced.options.iter().enumerate() {
        let r = &option.requirements;
        let name = if i == 0 { label } else { "" };
        let scheme = if r.scheme == "exact" {
            String::new()
        } else {
            format!(" {}", r.scheme)
        };
        let sync = if priced.sync_settle { ", sync" } else { "" };
        let local = if priced.verify == x402_gateway::pricing::VerifyPolicy::Local {
            ", verify local"
        } else {
            ""
        };
        println!(
            "{name:<32} {amount:>12} {symbol} ({dollars}){scheme} on {network} to {pay_to}, settle {settle}{sync}{local}",
            amount = r.amount,
            symbol = option.asset_symbol,
            dollars = format_units(option.amount, option.decimals),
            network = r.network,
            pay_to = r.pay_to,
            settle = priced.settle.as_str(),
        );
        if let Some(metering) = priced.metering.as_ref().filter(|_| r.scheme == "upto") {
            println!(
                "{:<32} metered: maximum {} {symbol} ({}); charged from Settlement-Overrides, else {}; when missing or unreadable: {}",
                "",
                r.amount,
                format_units(option.amount, option.decimals),
                describe_usage(metering, &option.asset_symbol, option.decimals),
                metering.fallback.as_str(),
                symbol = option.asset_symbol,
            );
        }
        if r.scheme == x402_gateway::payment::batch::BATCH_SETTLEMENT {
            let extra = |key: &str| {
                r.extra
                    .get(key)
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .unwrap_or_default()
            };
            println!(
                "{:<32} channel: vouchers of {} {symbol} each; deposits of at least {} {symbol}; withdrawals wait {}s; claimed every {}s",
                "",
                r.amount,
                extra(x402_gateway::payment::batch::MIN_DEPOSIT_KEY),
                extra(x402_gateway::payment::batch::WITHDRAW_DELAY_KEY),
                config.batch.claim_interval.as_secs(),
                symbol = option.asset_symbol,
            );
        }
        if let (0, Some(window)) = (i, priced.access) {
            println!(
                "{:<32} access: a settled payment lets its wallet sign in instead of paying again for {}s",
                "",
                window.as_secs()
            );
        }
        let served_by = primary_facilitator(&config.facilitators, &r.network);
        if let Some(Some(Ok(tiers))) = served_by.and_then(|i| fees.get(i)) {
            let facilitator = served_by
                .and_then(|i| config.facilitators.get(i))
                .map_or("", |f| f.name.as_str());
            match quote_fee(tiers, option.amount, option.decimals) {
                Some(q) => println!(
                    "{:<32} fee {} {symbol} ({tier}, {facilitator}), seller receives {} {symbol} ({})",
                    "",
                    q.fee,
                    q.net,
                    format_units(q.net, option.decimals),
                    symbol = option.asset_symbol,
                    tier = describe_tier(&q.tier),
                ),
                None => println!("{:<32} fee: no published tier covers this price", ""),
            }
        }
    }
    for rule in &priced.price_rules {
        let prices: Vec<String> = rule
            .priced
            .options
            .iter()
            .map(|o| {
                format!(
                    "{} {} ({}) on {}",
                    o.requirements.amount,
                    o.asset_symbol,
                    format_units(o.amount, o.decimals),
                    o.requirements.network
                )
            })
            .collect();
        println!(
            "{:<32} when {}: {}",
            "",
            rule.condition.describe(),
            prices.join(", ")
        );
    }
    if let Some(discovery) = &priced.discovery {
        // The label of an HTTP route is its `match` string, which starts with the method.
        let method = label.split_whitespace().next().unwrap_or("*");
        println!(
            "{:<32} listed in the Bazaar: {}",
            "",
            discovery.describe(method)
        );
    }
}
