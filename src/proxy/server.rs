//! Building the Pingora server from a validated configuration.

use super::Gateway;
use crate::config::GatewayConfig;
use crate::facilitator::{FacilitatorError, Facilitators};
use crate::payment::{InMemoryReplayGuard, ReplayGuard};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Everything a request needs that belongs to one configuration version.
pub struct GatewayState {
    pub config: GatewayConfig,
    /// The facilitators, chosen per payment by its network.
    pub facilitators: Facilitators,
    /// The upstream address, resolved once at start-up.
    pub upstream_addr: SocketAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot resolve upstream host `{host}`: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot set up the facilitator client: {0}")]
    Facilitator(#[from] FacilitatorError),
    #[error("cannot listen with TLS on {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
}

impl GatewayState {
    pub fn new(config: GatewayConfig) -> Result<Self, StartError> {
        let upstream = &config.upstream;
        let upstream_addr = (upstream.host.as_str(), upstream.port)
            .to_socket_addrs()
            .map_err(|e| StartError::Resolve {
                host: upstream.host.clone(),
                reason: e.to_string(),
            })?
            .next()
            .ok_or_else(|| StartError::Resolve {
                host: upstream.host.clone(),
                reason: "no address".into(),
            })?;
        let facilitators = Facilitators::from_config(&config.facilitators)?;
        Ok(Self {
            config,
            facilitators,
            upstream_addr,
        })
    }
}

/// Drops expired authorizations from the replay guard once a minute.
struct ReplaySweeper(Arc<dyn ReplayGuard>);

#[async_trait]
impl BackgroundService for ReplaySweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    let dropped = self.0.forget_expired(now).await;
                    if dropped > 0 {
                        tracing::debug!(dropped, remembered = self.0.len(), "expired authorizations forgotten");
                    }
                }
            }
        }
    }
}

/// A ready-to-run Pingora server for `state`.
pub fn build_server(state: GatewayState) -> Result<Server, StartError> {
    let server_config = &state.config.server;
    let conf = ServerConf {
        threads: server_config.threads,
        grace_period_seconds: Some(server_config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(2),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let listen = server_config.listen;
    let tls = server_config.tls.clone();
    let replay: Arc<dyn ReplayGuard> = Arc::new(InMemoryReplayGuard::new());
    let gateway = Gateway::new(Arc::new(ArcSwap::from_pointee(state)), replay.clone());
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "x402-gateway",
    );
    match tls {
        None => proxy.add_tcp(&listen.to_string()),
        Some((cert, key)) => proxy
            .add_tls(
                &listen.to_string(),
                &cert.to_string_lossy(),
                &key.to_string_lossy(),
            )
            .map_err(|e| StartError::Tls {
                addr: listen,
                reason: e.to_string(),
            })?,
    }
    server.add_service(proxy);
    server.add_service(background_service("replay sweeper", ReplaySweeper(replay)));
    Ok(server)
}
