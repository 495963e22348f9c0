//! The `x402-gateway` command: wiring only. Parsing, validation and proxying live in the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use x402_gateway::config::{FacilitatorKind, GatewayConfig};
use x402_gateway::pricing::RouteKind;
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
    }
}

fn run(path: PathBuf, demo_upstream: bool) -> Result<()> {
    let config = GatewayConfig::load(&path).map_err(anyhow::Error::msg)?;
    if demo_upstream {
        start_demo_upstream(&config)?;
    }
    let listen = config.server.listen;
    // Pingora reports a bind failure only inside its service thread and keeps running without a
    // listener; trying the address first turns that into a clear start-up error.
    drop(
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("cannot listen on {listen}"))?,
    );
    let route_count = config.routes.in_file_order().len();
    let facilitator = config.facilitator.kind;
    let state = GatewayState::new(config).context("cannot start")?;
    let server = build_server(state).context("cannot start")?;
    tracing::info!(%listen, routes = route_count, facilitator = ?facilitator, "x402-gateway listening");
    server.run_forever()
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

/// `10000` with 6 decimals → `0.01`.
fn format_units(amount: u128, decimals: u8) -> String {
    let scale = 10u128.pow(decimals as u32);
    let fraction = format!("{:0width$}", amount % scale, width = decimals as usize);
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}", amount / scale)
    } else {
        format!("{}.{fraction}", amount / scale)
    }
}
