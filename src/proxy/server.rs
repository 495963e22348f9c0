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

/// Claims the charges kept on `batch-settlement` channels, on `[batch] claim_interval` or once the
/// unclaimed value passes `claim_threshold`; one replica at a time (a lease in the channel store).
struct ChannelClaimer {
    channels: Arc<dyn crate::store::ChannelStore>,
    state: Arc<ArcSwap<GatewayState>>,
    /// This process's name in the lease.
    holder: String,
}

#[async_trait]
impl BackgroundService for ChannelClaimer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use crate::ops::claims::{check_every, claim_once, exposure, CLAIM_LEASE};
        let mut last_claim = std::time::Instant::now();
        let mut owed = std::collections::BTreeSet::new();
        loop {
            let state = self.state.load_full();
            let batch = state.config.batch.clone();
            let in_use = state
                .config
                .routes
                .has_scheme(crate::payment::batch::BATCH_SETTLEMENT);
            drop(state);
            let looked = if in_use || !owed.is_empty() {
                exposure(self.channels.as_ref()).await
            } else {
                None
            };
            if let Some((unclaimed, channels)) = looked {
                let metrics = crate::metrics::Metrics::global();
                metrics
                    .batch_unclaimed
                    .set(i64::try_from(unclaimed).unwrap_or(i64::MAX));
                metrics
                    .batch_channels
                    .set(i64::try_from(channels).unwrap_or(i64::MAX));
                let due = last_claim.elapsed() >= batch.claim_interval
                    || batch.claim_threshold.is_some_and(|t| unclaimed >= t);
                if due && (unclaimed > 0 || !owed.is_empty()) {
                    last_claim = std::time::Instant::now();
                    let lease_ms =
                        u64::try_from(batch.claim_interval.as_millis().saturating_mul(2))
                            .unwrap_or(u64::MAX);
                    match self
                        .channels
                        .lease(CLAIM_LEASE, &self.holder, lease_ms)
                        .await
                    {
                        Ok(true) => {
                            let state = self.state.load_full();
                            let facilitator_for =
                                |network: &str| state.facilitators.for_network(network);
                            let own_key = batch.receiver_authorizer_key.as_ref().and_then(|k| {
                                crate::payment::batch::ReceiverAuthorizerKey::from_hex(k.expose())
                                    .ok()
                            });
                            let round = claim_once(
                                self.channels.as_ref(),
                                &facilitator_for,
                                own_key.as_ref(),
                                &mut owed,
                            )
                            .await;
                            tracing::debug!(?round, "claim round");
                        }
                        Ok(false) => {
                            tracing::debug!("another replica holds the claim lease");
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the claim lease cannot be taken; claims wait for the store");
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(check_every(batch.claim_interval)) => {}
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
    shared: Option<&RedisStore>,
) -> Result<JournalBackend, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Runtime(e.to_string()))?;
    // A Redis replay guard records final states off the caller's path, on the caller's runtime;
    // this one ends on return, so it first lets those writes land (each is bounded by the
    // store's timeout; one that does not land leaves its reservation refusing until it expires).
    let settle_writes = || {
        if let Some(store) = shared {
            let bound = store.timeout() * 2;
            if runtime
                .block_on(async { tokio::time::timeout(bound, store.detached_done()).await })
                .is_err()
            {
                tracing::warn!("some replay states from the journal were not written to redis in time; their reservations refuse until they expire");
            }
        }
    };
    if let Some(url) = &config.url {
        let pg = PgJournal::open(url.expose(), &config.path)?;
        // Settled and pending authorizations of every replica stay refused here too.
        let live = pg.live_authorizations(crate::time::unix_now())?;
        runtime.block_on(journal::resume(pg.as_ref(), &live, replay))?;
        settle_writes();
        tracing::info!(spool = %config.path.display(), live = live.len(), "journal database opened");
        return Ok(JournalBackend::Postgres(pg));
    }
    let (journal, entries) = FileJournal::open(&config.path)?;
    let resumed = runtime.block_on(journal::resume(journal.as_ref(), &entries, replay))?;
    settle_writes();
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
    let mut stores = match &shared {
        Some(store) => Stores::shared(store.clone()),
        None => Stores::local(),
    };
    // Without Redis, channels are kept in the PostgreSQL ledger when there is one: a channel's
    // latest voucher is the gateway's claim on the buyer's deposit, and must survive a restart.
    // Access grants likewise: a buyer who paid for a window keeps it across a restart.
    if let (None, Some(url)) = (
        &shared,
        journal_config.as_ref().and_then(|j| j.url.as_ref()),
    ) {
        let channels = state
            .config
            .routes
            .has_scheme(crate::payment::batch::BATCH_SETTLEMENT);
        let access = state.config.routes.has_access();
        if channels || access {
            let database = crate::store::PostgresChannels::open(url.expose())?;
            if access {
                stores.sign_in = Arc::new(database.sign_in());
                tracing::info!("access grants are kept in the journal database");
            }
            if channels {
                stores.channels = Arc::new(database);
            }
        }
    }
    if state
        .config
        .routes
        .has_scheme(crate::payment::batch::BATCH_SETTLEMENT)
    {
        tracing::info!(
            store = stores.channels.durability(),
            "batch-settlement channels are kept here"
        );
    }
    let journal = match &journal_config {
        None => None,
        Some(j) => Some(open_journal(j, stores.replay.as_ref(), shared.as_deref())?),
    };

    let source = state.config.source.clone();
    let state = Arc::new(ArcSwap::from_pointee(state));
    let sweeper = ReplaySweeper(
        stores.replay.clone(),
        stores.idempotency.clone(),
        stores.rates.clone(),
    );
    let claimer = ChannelClaimer {
        channels: stores.channels.clone(),
        state: state.clone(),
        holder: format!(
            "{}-{}",
            std::process::id(),
            alloy_primitives::hex::encode(rand::random::<[u8; 8]>())
        ),
    };
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
        let mut tls = TlsSettings::intermediate(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| StartError::Tls {
                addr: server_config.listen,
                reason: e.to_string(),
            })?;
        if server_config.http2 {
            // ALPN offers h2 first, HTTP/1.1 still allowed.
            tls.enable_h2();
        }
        listener = listener.tls(tls);
    }
    if server_config.http2 && server_config.tls.is_none() {
        // Plain text: HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 on the same port.
        if let Some(app) = proxy.app_logic_mut() {
            let mut options = pingora::apps::HttpServerOptions::default();
            options.h2c = true;
            app.server_options = Some(options);
        }
    }
    proxy.add_listener(listener);
    server.add_service(proxy);

    let mut admin_service = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp::new(health.clone(), state.clone())),
    );
    admin_service.add_tcp(&admin.listen.to_string());
    server.add_service(admin_service);
    match &admin.token {
        Some(_) => tracing::info!(
            console = %format!("http://{}/console", admin.listen),
            "admin API and console: [admin] token required"
        ),
        None => tracing::warn!(
            console = %format!("http://{}/console", admin.listen),
            "no [admin] token: the admin API answers only to loopback peers"
        ),
    }

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
    server.add_service(background_service("batch-settlement claims", claimer));
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
