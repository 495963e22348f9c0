//! Benchmark only: `x402-axum` guarding `GET /paid` in process (no proxy hop), with the same price,
//! token, recipient and answer body as `bench/gateway.toml` and `bench/express_server.mjs`.
//!
//! ```sh
//! cargo run --release -- 127.0.0.1:19405 http://127.0.0.1:19401
//! ```
//! Prints `{"ready":true,"addr":"…"}` once it listens.

use alloy_primitives::address;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use axum::Router;
use x402_axum::X402Middleware;
use x402_chain_eip155::{KnownNetworkEip155, V2Eip155Exact};
use x402_types::networks::USDC;

/// The same bytes `examples/bench_upstream.rs` answers.
const BODY: &str = r#"{"ok":true,"data":"benchmark payload","items":[1,2,3]}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:19405".into());
    let facilitator = args.next().unwrap_or_else(|| "http://127.0.0.1:19401".into());

    let x402 = X402Middleware::try_from(facilitator)?;
    // $0.01 of USDC on Base Sepolia to the benchmark's recipient; authorizations valid for an
    // hour, so headers signed before the run stay valid through every repetition.
    let mut price = V2Eip155Exact::price_tag(
        address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
        USDC::base_sepolia().amount(10_000u64),
    );
    price.requirements.max_timeout_seconds = 3600;

    let app = Router::new().route(
        "/paid",
        get(|| async { ([(CONTENT_TYPE, "application/json")], BODY) }).layer(
            x402.with_price_tag(price)
                .with_description("paid data".into())
                .with_mime_type("application/json".into()),
        ),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("{{\"ready\":true,\"addr\":\"{}\"}}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
