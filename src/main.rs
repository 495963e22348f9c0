//! The `x402-gateway` command: wiring only. Parsing, validation and proxying live in the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use x402_gateway::config::{FacilitatorKind, GatewayConfig};
use x402_gateway::pricing::{format_units, RouteKind};
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
    /// List the payments recorded in the settlement journal, one row per payment.
    Receipts {
        /// Configuration file naming the journal (`[journal] path`).
        #[arg(long, short, default_value = "gateway.toml")]
        config: PathBuf,
        /// The journal file itself (instead of reading it from the configuration).
        #[arg(long)]
        journal: Option<PathBuf>,
        /// Only payments first recorded at or after this time: unix seconds, an RFC 3339 UTC
        /// time, a date, or a duration back from now ("24h").
        #[arg(long)]
        since: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ReceiptsFormat::Csv)]
        format: ReceiptsFormat,
    },
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            config,
            demo_upstream,
        } => run(config, demo_upstream),
        Command::Check { config } => check(config),
        Command::Receipts {
            config,
            journal,
            since,
            format,
        } => receipts(config, journal, since, format),
    }
}

fn run(path: PathBuf, demo_upstream: bool) -> Result<()> {
    let config = GatewayConfig::load(&path).map_err(anyhow::Error::msg)?;
    if demo_upstream {
        start_demo_upstream(&config)?;
    }
    let listen = config.server.listen;
    let route_count = config.routes.in_file_order().len();
    let facilitator = config.facilitator.kind;
    let admin = config.admin.listen;
    let state = GatewayState::new(config).context("cannot start")?;
    let server = build_server(state).context("cannot start")?;
    tracing::info!(%listen, %admin, routes = route_count, facilitator = ?facilitator, "x402-gateway listening");
    server.run();
    Ok(())
}

fn receipts(
    config: PathBuf,
    journal: Option<PathBuf>,
    since: Option<String>,
    format: ReceiptsFormat,
) -> Result<()> {
    use x402_gateway::ops::{journal as j, receipts as r};
    let path = match journal {
        Some(path) => path,
        None => GatewayConfig::load(&config)
            .map_err(anyhow::Error::msg)?
            .journal
            .map(|j| j.path)
            .with_context(|| {
                format!(
                    "{} has no [journal] path; pass --journal PATH",
                    config.display()
                )
            })?,
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let since = since
        .map(|s| j::parse_since(&s, now_ms))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--since {e}"))?;
    let entries = j::read_entries(&path)?;
    let format = match format {
        ReceiptsFormat::Csv => r::ReceiptFormat::Csv,
        ReceiptsFormat::Json => r::ReceiptFormat::Json,
    };
    print!("{}", r::render(&r::receipts(&entries, since), format));
    Ok(())
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

fn check(path: PathBuf) -> Result<()> {
    let config = GatewayConfig::load(&path).map_err(anyhow::Error::msg)?;
    println!("{}: OK", path.display());
    println!("upstream     {}", config.upstream.url);
    match config.facilitator.kind {
        FacilitatorKind::X402 => println!(
            "facilitator  x402 {}",
            config.facilitator.url.as_deref().unwrap_or_default()
        ),
        FacilitatorKind::Local => println!("facilitator  local (TEST MODE: no money moves)"),
    }
    println!("unmatched    {:?}", config.unmatched);
    println!(
        "admin        {} (/healthz, /readyz, /metrics)",
        config.admin.listen
    );
    match &config.journal {
        Some(j) => println!("journal      {}", j.path.display()),
        None => println!("journal      none (payments are only logged)"),
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
            RouteKind::Priced(priced) => {
                for (i, option) in priced.options.iter().enumerate() {
                    let r = &option.requirements;
                    let name = if i == 0 { route.source.as_str() } else { "" };
                    println!(
                        "{name:<32} {amount:>12} {symbol} ({dollars}) on {network} to {pay_to}, settle {settle}",
                        amount = r.amount,
                        symbol = option.asset_symbol,
                        dollars = format_units(option.amount, option.decimals),
                        network = r.network,
                        pay_to = r.pay_to,
                        settle = priced.settle.as_str(),
                    );
                }
            }
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
