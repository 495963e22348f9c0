//! Hot reload: on `SIGHUP`, and whenever the configuration file's content changes (which also
//! catches Kubernetes ConfigMap updates, where the file is replaced by swapping a symlink), the new
//! file is validated and swapped in atomically. Requests already running keep the snapshot they
//! started with. An invalid file is refused with a log line and a metric; the old one keeps serving.

use crate::config::GatewayConfig;
use crate::metrics::Metrics;
use crate::ops::admin::Health;
use crate::state::GatewayState;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the file is compared with what is loaded.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Start(#[from] crate::state::StartError),
    #[error("{0}")]
    Preflight(#[from] crate::facilitator::PreflightError),
}

pub struct Reloader {
    path: PathBuf,
    state: Arc<ArcSwap<GatewayState>>,
    health: Arc<Health>,
    /// The bytes of the file last considered, loaded or refused: a refused file is not retried
    /// every poll, only when it changes again (or on SIGHUP).
    last_seen: Mutex<Option<Vec<u8>>>,
}

impl Reloader {
    pub fn new(path: PathBuf, state: Arc<ArcSwap<GatewayState>>, health: Arc<Health>) -> Self {
        let current = std::fs::read(&path).ok();
        Metrics::global()
            .config_loaded_timestamp
            .set(crate::time::unix_now() as i64);
        Self {
            path,
            state,
            health,
            last_seen: Mutex::new(current),
        }
    }

    /// Loads, validates and swaps in the file. Settings that need new sockets or files keep their
    /// old values until a restart, with a warning.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        let config = GatewayConfig::load(&self.path)?;
        let old = self.state.load_full();
        let mut config = config;
        let mut needs_restart = Vec::new();
        if config.server.listen != old.config.server.listen {
            needs_restart.push("[server] listen");
        }
        if config.server.tls != old.config.server.tls {
            needs_restart.push("[server] cert/key");
        }
        if config.server.threads != old.config.server.threads {
            needs_restart.push("[server] threads");
        }
        if config.server.grace_period != old.config.server.grace_period {
            needs_restart.push("[server] grace_period");
        }
        if config.admin.listen != old.config.admin.listen {
            needs_restart.push("[admin] listen");
        }
        if config.journal.as_ref().map(|j| &j.path) != old.config.journal.as_ref().map(|j| &j.path)
        {
            needs_restart.push("[journal] path");
        }
        if config.journal.as_ref().map(|j| &j.url) != old.config.journal.as_ref().map(|j| &j.url) {
            needs_restart.push("[journal] url");
        }
        if config.redis != old.config.redis {
            needs_restart.push("[redis]");
        }
        if !needs_restart.is_empty() {
            tracing::warn!(
                settings = %needs_restart.join(", "),
                "these settings changed but take effect only after a restart"
            );
            config.server = old.config.server.clone();
            config.admin.listen = old.config.admin.listen;
            config.journal = old.config.journal.clone();
            config.redis = old.config.redis.clone();
        }
        // Unchanged facilitators keep their clients (connection pools, test-mode ledger).
        let facilitators = old
            .facilitators
            .built_from(&config.facilitators)
            .then(|| old.facilitators.clone());
        // Unchanged facilitators keep the `upto` addresses already in challenges buyers hold.
        let known = match &facilitators {
            Some(_) => crate::facilitator::known_upto_settlers(&old.config),
            None => Default::default(),
        };
        let built = match &facilitators {
            Some(kept) => kept.clone(),
            None => crate::facilitator::Facilitators::from_config(&config.facilitators)
                .map_err(crate::state::StartError::from)?,
        };
        let settlers = crate::facilitator::resolve_upto_settlers(&mut config, &built, &known).await;
        for network in settlers.missing {
            tracing::warn!(%network, "no facilitator named an address that settles `upto` payments on this network; its metered routes answer 503");
        }
        let state = GatewayState::with_facilitators(config, Some(built))?;
        // The start-up check of OKX and AgentWallex facilitators applies to every new version:
        // a route they cannot settle, or credentials they refuse, keep the old one serving.
        let report = crate::facilitator::preflight(&state.config, &state.facilitators).await?;
        for warning in report.warnings {
            tracing::warn!("{warning}");
        }
        self.health
            .set_probe_interval(state.config.admin.probe_interval);
        let routes = state.config.routes.in_file_order().len();
        self.state.store(Arc::new(state));
        Metrics::global()
            .config_reloads
            .with_label_values(&["success"])
            .inc();
        Metrics::global()
            .config_loaded_timestamp
            .set(crate::time::unix_now() as i64);
        tracing::info!(config = %self.path.display(), routes, "configuration reloaded");
        Ok(())
    }

    async fn reload_logged(&self, why: &str) {
        if let Err(e) = self.reload().await {
            Metrics::global()
                .config_reloads
                .with_label_values(&["failure"])
                .inc();
            tracing::error!(trigger = why, error = %e, "configuration reload refused; the previous configuration keeps serving");
        }
    }

    /// Reloads when the file's bytes differ from the last ones seen.
    async fn poll(&self) {
        let Ok(current) = std::fs::read(&self.path) else {
            // Mid-swap or briefly missing: look again next time.
            return;
        };
        let changed = match self.last_seen.lock() {
            Ok(mut last) if last.as_deref() != Some(current.as_slice()) => {
                *last = Some(current);
                true
            }
            _ => false,
        };
        if changed {
            self.reload_logged("file change").await;
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reload on file change only");
                None
            }
        };
        self.health.set_reloader_armed();
        let mut tick = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok(bytes) = std::fs::read(&self.path) {
                        if let Ok(mut last) = self.last_seen.lock() {
                            *last = Some(bytes);
                        }
                    }
                    self.reload_logged("SIGHUP").await;
                }
                _ = tick.tick() => self.poll().await,
            }
        }
    }
}
