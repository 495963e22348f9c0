//! The benchmark's baseline: a plain Pingora reverse proxy that picks the upstream and sets the same
//! `Host` and `X-Forwarded-*` headers as the gateway. Built with the same Pingora features, server
//! settings and allocator as the gateway, so the gap between the two is what the paywall costs.
//!
//! ```sh
//! cargo run --release --example passthrough -- 127.0.0.1:18400 127.0.0.1:18080 2
//! ```
//! Arguments: listen address, upstream address, worker threads (default: number of CPUs); or the
//! environment variables `PASSTHROUGH_LISTEN`, `PASSTHROUGH_UPSTREAM`, `PASSTHROUGH_THREADS`.

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::upstreams::peer::HttpPeer;
use std::net::SocketAddr;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Passthrough {
    upstream: SocketAddr,
    host: String,
}

#[async_trait]
impl ProxyHttp for Passthrough {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream,
            false,
            self.upstream.ip().to_string(),
        )))
    }

    /// What a reverse proxy in front of an API usually adds, as the gateway does.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        let original_host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned();
        upstream_request.insert_header(http::header::HOST, self.host.as_str())?;
        if let Some(host) = original_host {
            upstream_request.insert_header("X-Forwarded-Host", host)?;
        }
        upstream_request.insert_header("X-Forwarded-Proto", "http")?;
        if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
            let ip = client.ip().to_string();
            let forwarded = match session
                .req_header()
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
            {
                Some(previous) => format!("{previous}, {ip}"),
                None => ip,
            };
            upstream_request.insert_header("X-Forwarded-For", forwarded)?;
        }
        Ok(())
    }
}

fn arg(position: usize, env: &str) -> Option<String> {
    std::env::args()
        .nth(position)
        .or_else(|| std::env::var(env).ok())
}

fn main() {
    let listen = arg(1, "PASSTHROUGH_LISTEN").unwrap_or_else(|| "127.0.0.1:18400".into());
    let upstream: SocketAddr = arg(2, "PASSTHROUGH_UPSTREAM")
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()
        .expect("upstream must be an address such as 127.0.0.1:18080");
    let threads = arg(3, "PASSTHROUGH_THREADS")
        .map(|t| t.parse().expect("threads must be a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));

    // The same server settings as the gateway's `build_server`, minus what only matters at shutdown.
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Passthrough {
            upstream,
            host: upstream.to_string(),
        },
        "passthrough",
    );
    // The same listener buffers as the gateway, so the comparison is of the proxy logic alone.
    let buffers = L4BufferSettings::new(4096, DEFAULT_L4_WRITE_BUFFER_SIZE);
    proxy.add_listener(ListenerConfig::tcp(listen.clone()).l4_buffer(buffers));
    server.add_service(proxy);
    println!("{{\"ready\":true,\"addr\":\"{listen}\"}}");
    server.run_forever()
}
