//! Building the Pingora server from a validated configuration: the public proxy, the admin
//! listener, and the background services (replay sweeper, facilitator probe, journal
//! reconciliation, hot reload).

use super::Gateway;
use crate::ops::{
    journal, AdminApp, DrainingShutdown, FacilitatorProbe, FileJournal, Health, Journal, PgJournal,
    Reloader,
};
use crate::payment::idempotency::IdempotencyStore;
use crate::payment::ReplayGuard;
pub use crate::state::{GatewayState, StartError, UNMATCHED_LABEL};
use crate::store::{RateCounter, RedisStore, Stores};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Read buffer of a public connection, in bytes.
const PUBLIC_READ_BUFFER: usize = 4096;

/// Drops expired authorizations and idempotent replies once a minute.
struct ReplaySweeper(
    Arc<dyn ReplayGuard>,
    Arc<dyn IdempotencyStore>,
    Arc<dyn RateCounter>,
);

#[async_trait]
impl BackgroundService for ReplaySweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => {
                    let now = crate::time::unix_now();
                    self.1.forget_expired().await;
                    self.2.forget_expired();
                    let dropped = self.0.forget_expired(now).await;
                    if dropped > 0 {
                        tracing::debug!(dropped, remembered = self.0.len(), "expired authorizations forgotten");
                    }
                }
            }
        }
    }
}

/// Pings the shared store each probe interval, so readiness heals even without traffic.
struct StoreProbe {
    store: Arc<RedisStore>,
    health: Arc<Health>,
}

#[async_trait]
impl BackgroundService for StoreProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.store.ping().await;
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(self.health.probe_interval()) => {}
            }
        }
    }
}

/// The journal a server writes to.
#[derive(Clone)]
enum JournalBackend {
    File(Arc<FileJournal>),
    Postgres(Arc<PgJournal>),
}

impl JournalBackend {
    fn as_journal(&self) -> Arc<dyn Journal> {
        match self {
            Self::File(j) => j.clone(),
            Self::Postgres(j) => j.clone(),
        }
    }
}

/// Checks pending settlements with the facilitator now configured.
struct Reconciler {
    journal: JournalBackend,
    state: Arc<ArcSwap<GatewayState>>,
}

#[async_trait]
impl BackgroundService for Reconciler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let state = self.state.load_full();
            let facilitators = &state.facilitators;
            let facilitator_for = |entry: &journal::JournalEntry| {
                facilitators
                    .by_name(&entry.facilitator)
                    .or_else(|| facilitators.for_network(&entry.network))
            };
            match &self.journal {
                JournalBackend::File(j) => {
                    journal::reconcile_once(j.as_ref(), &facilitator_for).await
                }
                JournalBackend::Postgres(j) => j.reconcile_once(&facilitator_for).await,
            }
            let pause = state
                .config
                .journal
                .as_ref()
                .map_or(Duration::from_secs(30), |j| j.reconcile_interval);
            drop(state);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

/// A server ready to run, with the shutdown behaviour it needs.
pub struct GatewayServer {
    server: Server,
    shutdown: DrainingShutdown,
}

impl GatewayServer {
    /// Serves until `SIGTERM` (graceful) or `SIGINT` (fast).
    pub fn run(self) {
        self.server.run(RunArgs {
            shutdown_signal: Box::new(self.shutdown),
        });
    }
}

/// Pingora logs a listener that cannot bind and keeps running without it; binding once here
/// turns that into a start-up error. The socket is closed again before Pingora binds it.
fn check_bind(addr: SocketAddr, what: &'static str) -> Result<(), StartError> {
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| StartError::Bind {
            addr,
            what,
            reason: e.to_string(),
        })
}

/// Opens the configured journal and brings the replay guard back to where it left off.
fn open_journal(
    config: &crate::config::JournalConfig,
    replay: &dyn ReplayGuard,
) -> Result<JournalBackend, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    if let Some(url) = &config.url {
        let pg = PgJournal::open(url.expose(), &config.path)?;
        // Settled and pending authorizations of every replica stay refused here too.
        let live = pg.live_authorizations(crate::time::unix_now())?;
        runtime.block_on(journal::resume(pg.as_ref(), &live, replay))?;
        tracing::info!(spool = %config.path.display(), live = live.len(), "journal database opened");
        return Ok(JournalBackend::Postgres(pg));
    }
    let (journal, entries) = FileJournal::open(&config.path)?;
    let resumed = runtime.block_on(journal::resume(journal.as_ref(), &entries, replay))?;
    tracing::info!(journal = %config.path.display(), entries = entries.len(), pending = resumed, "journal opened");
    if resumed > 0 {
        tracing::warn!(
            pending = resumed,
            "pending settlements from an earlier run resume reconciliation"
        );
    }
    Ok(JournalBackend::File(journal))
}

/// A ready-to-run server for `state`.
pub fn build_server(state: GatewayState) -> Result<GatewayServer, StartError> {
    let server_config = state.config.server.clone();
    let admin = state.config.admin.clone();
    let journal_config = state.config.journal.clone();
    check_bind(server_config.listen, "[server] listen")?;
    check_bind(admin.listen, "[admin] listen")?;

    // Pingora sleeps its whole grace period on SIGTERM; DrainingShutdown ends the process
    // earlier once idle, and at the latest at the grace period.
    let grace_secs = server_config.grace_period.as_secs_f64().ceil() as u64;
    let conf = ServerConf {
        threads: server_config.threads,
        grace_period_seconds: Some(grace_secs),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let health = Arc::new(Health::new(server_config.listen, admin.probe_interval));
    let shared = match &state.config.redis {
        None => None,
        Some(redis) => {
            let store = Arc::new(RedisStore::connect(redis)?);
            tracing::info!(redis = %redis.display_url(), prefix = %redis.key_prefix, "replicas share state through redis");
            health.watch_shared_store(store.clone());
            Some(store)
        }
    };
    let stores = match &shared {
        Some(store) => Stores::shared(store.clone()),
        None => Stores::local(),
    };
    let journal = match &journal_config {
        None => None,
        Some(j) => Some(open_journal(j, stores.replay.as_ref())?),
    };

    let source = state.config.source.clone();
    let state = Arc::new(ArcSwap::from_pointee(state));
    let sweeper = ReplaySweeper(
        stores.replay.clone(),
        stores.idempotency.clone(),
        stores.rates.clone(),
    );
    let gateway = Gateway::new(
        state.clone(),
        stores,
        journal.as_ref().map(JournalBackend::as_journal),
        health.clone(),
    );
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        gateway,
        "x402-gateway",
    );
    // Pingora's default 64 KiB read buffer per connection would cost ~320 MiB for 5,000 idle
    // keep-alive clients; request heads fit in a few KiB and larger reads bypass the buffer.
    let buffers = L4BufferSettings::new(PUBLIC_READ_BUFFER, DEFAULT_L4_WRITE_BUFFER_SIZE);
    let mut listener = ListenerConfig::tcp(server_config.listen.to_string()).l4_buffer(buffers);
    if let Some((cert, key)) = &server_config.tls {
        let tls = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| StartError::Tls {
                addr: server_config.listen,
                reason: e.to_string(),
            })?;
        listener = listener.tls(tls);
    }
    proxy.add_listener(listener);
    server.add_service(proxy);

    let mut admin_service = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp::new(health.clone())),
    );
    admin_service.add_tcp(&admin.listen.to_string());
    server.add_service(admin_service);

    server.add_service(background_service("replay sweeper", sweeper));
    if let Some(store) = shared {
        server.add_service(background_service(
            "redis probe",
            StoreProbe {
                store,
                health: health.clone(),
            },
        ));
    }
    server.add_service(background_service(
        "facilitator probe",
        FacilitatorProbe::new(state.clone(), health.clone()),
    ));
    server.add_service(background_service(
        "config reload",
        Reloader::new(source, state.clone(), health.clone()),
    ));
    if let Some(journal) = journal {
        server.add_service(background_service(
            "journal reconciliation",
            Reconciler {
                journal,
                state: state.clone(),
            },
        ));
    }
    Ok(GatewayServer {
        server,
        shutdown: DrainingShutdown::new(health, server_config.grace_period),
    })
}
