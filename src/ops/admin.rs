//! The admin listener: `/healthz` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus),
//! the read-only admin API under `/admin/api/` and the operator's console at `/console`. It
//! listens on its own address, never the public one, so probes and scrapes neither pay nor count
//! as API traffic. What the API answers is computed in [`super::admin_api`]; this is the HTTP.

use crate::config::JournalConfig;
use crate::metrics::Metrics;
use crate::ops::admin_api::{self, ApiError};
use crate::ops::journal::{read_entries, PgJournal};
use crate::ops::receipts::{receipt_rows, Receipt, ReceiptQuery};
use crate::state::GatewayState;
use crate::store::StoreHealth;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const HEALTHZ_PATH: &str = "/healthz";
pub const READYZ_PATH: &str = "/readyz";
pub const METRICS_PATH: &str = "/metrics";

/// What liveness and readiness are decided from, shared by the proxy and the admin listener.
pub struct Health {
    /// Where the public listener can be reached from this process.
    public_addr: SocketAddr,
    started: Instant,
    probe_interval_ms: AtomicU64,
    /// Facilitator name → milliseconds since `started` of its last good answer.
    facilitators: Mutex<HashMap<String, Option<u64>>>,
    reloader_armed: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicI64,
    /// The shared store replicas coordinate through, when configured.
    shared_store: Mutex<Option<Arc<dyn StoreHealth>>>,
}

impl Health {
    pub fn new(public_listen: SocketAddr, probe_interval: Duration) -> Self {
        // A wildcard listener is reached through the loopback of its family.
        let ip = match public_listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self {
            public_addr: SocketAddr::new(ip, public_listen.port()),
            started: Instant::now(),
            probe_interval_ms: AtomicU64::new(probe_interval.as_millis() as u64),
            facilitators: Mutex::new(HashMap::new()),
            reloader_armed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            shared_store: Mutex::new(None),
        }
    }

    /// Readiness follows `store` from now on: paid requests cannot be served without it.
    pub fn watch_shared_store(&self, store: Arc<dyn StoreHealth>) {
        if let Ok(mut slot) = self.shared_store.lock() {
            *slot = Some(store);
        }
    }

    pub fn set_probe_interval(&self, interval: Duration) {
        self.probe_interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms.load(Ordering::Relaxed).max(1))
    }

    pub fn facilitator_answered(&self, name: &str, ok: bool) {
        let now = self.started.elapsed().as_millis() as u64;
        if let Ok(mut map) = self.facilitators.lock() {
            let slot = map.entry(name.to_string()).or_insert(None);
            if ok {
                *slot = Some(now);
            }
        }
        Metrics::global()
            .facilitator_up
            .with_label_values(&[name])
            .set(i64::from(ok));
    }

    /// Forgets facilitators that the current configuration no longer uses.
    pub fn keep_facilitators(&self, names: &[&str]) {
        if let Ok(mut map) = self.facilitators.lock() {
            map.retain(|k, _| names.contains(&k.as_str()));
        }
    }

    pub fn set_reloader_armed(&self) {
        self.reloader_armed.store(true, Ordering::Release);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Readiness and its reasons, as the `/readyz` body.
    pub fn readiness(&self) -> (bool, serde_json::Value) {
        let now = self.started.elapsed().as_millis() as u64;
        let window = self.probe_interval().as_millis() as u64 * 3;
        let mut ready = true;
        let mut facilitators = serde_json::Map::new();
        let map = self
            .facilitators
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        if map.is_empty() {
            ready = false;
        }
        for (name, last_ok) in map {
            let recent = last_ok.is_some_and(|t| now.saturating_sub(t) <= window);
            ready &= recent;
            facilitators.insert(
                name,
                json!({
                    "reachable": recent,
                    "last_ok_ms_ago": last_ok.map(|t| now.saturating_sub(t)),
                }),
            );
        }
        let armed = self.reloader_armed.load(Ordering::Acquire);
        let draining = self.draining.load(Ordering::Acquire);
        ready &= armed && !draining;
        let store = self.shared_store.lock().ok().and_then(|s| s.clone());
        let shared_store = store.map(|s| {
            let reachable = s.reachable();
            ready &= reachable;
            json!({"redis": s.describe(), "reachable": reachable})
        });
        let mut body = json!({
            "ready": ready,
            "config": "loaded",
            "reload": if armed { "watching" } else { "starting" },
            "draining": draining,
            "facilitators": facilitators,
        });
        if let Some(shared_store) = shared_store {
            body["shared_store"] = shared_store;
        }
        (ready, body)
    }
}

/// Counts a request from its start to the end of its last phase; shutdown waits for zero.
pub struct InFlight(Arc<Health>);

impl InFlight {
    pub fn start(health: &Arc<Health>) -> Self {
        health.in_flight.fetch_add(1, Ordering::AcqRel);
        Metrics::global().in_flight.inc();
        Self(health.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        Metrics::global().in_flight.dec();
    }
}

/// The admin HTTP application.
pub struct AdminApp {
    health: Arc<Health>,
    /// The configuration in force (the admin token, explorers, journal and routes follow reloads).
    state: Arc<ArcSwap<GatewayState>>,
}

impl AdminApp {
    pub fn new(health: Arc<Health>, state: Arc<ArcSwap<GatewayState>>) -> Self {
        Self { health, state }
    }
}

pub const CONSOLE_PATH: &str = "/console";
const CONSOLE_HTML: &str = include_str!("console/console.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");
/// The console runs its own script and style only, talks to this listener only, and is never
/// framed.
const CONSOLE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";
/// The longest the API waits for the journal database.
const JOURNAL_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn json_response(status: u16, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(body)
        .unwrap_or_default()
}

fn api_error(error: &ApiError) -> Response<Vec<u8>> {
    let mut response = json_response(error.status, error.body());
    if error.status == 401 {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"x402-gateway admin\""),
        );
    }
    response
}

fn console_asset(content_type: &'static str, body: &'static str) -> Response<Vec<u8>> {
    let body = body.as_bytes().to_vec();
    Response::builder()
        .status(200)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(http::header::CONTENT_SECURITY_POLICY, CONSOLE_POLICY)
        .header(http::header::X_FRAME_OPTIONS, "DENY")
        .header(http::header::REFERRER_POLICY, "no-referrer")
        .body(body)
        .unwrap_or_default()
}

/// Reads the journal the configuration names with the reader the `receipts` command uses: the
/// PostgreSQL ledger with `[journal] url`, the journal file otherwise.
async fn read_journal(
    journal: Option<&JournalConfig>,
    query: &ReceiptQuery,
) -> Result<Vec<Receipt>, ApiError> {
    let Some(journal) = journal else {
        return Err(ApiError::new(
            404,
            "no_journal",
            "the configuration has no [journal]: payments are only logged",
        ));
    };
    let unreadable = |e: &dyn std::fmt::Display| {
        tracing::warn!(error = %e, "the admin API cannot read the journal");
        ApiError::new(503, "journal_unavailable", "the journal cannot be read now")
    };
    match &journal.url {
        Some(url) => {
            let read = PgJournal::read_receipt_rows(url.expose(), query);
            match tokio::time::timeout(JOURNAL_READ_TIMEOUT, read).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(unreadable(&e)),
                Err(_) => Err(unreadable(&"timed out")),
            }
        }
        None => {
            let path = journal.path.clone();
            let query = query.clone();
            let read = tokio::task::spawn_blocking(move || {
                if !path.exists() {
                    return Ok(Vec::new());
                }
                read_entries(&path).map(|entries| receipt_rows(&entries, &query))
            })
            .await;
            match read {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(unreadable(&e)),
                Err(e) => Err(unreadable(&e)),
            }
        }
    }
}

impl AdminApp {
    /// An admin API request, once its caller is allowed.
    async fn api(
        &self,
        endpoint: &str,
        query: Option<&str>,
    ) -> Result<serde_json::Value, ApiError> {
        let state = self.state.load_full();
        let config = &state.config;
        let params = admin_api::params(query);
        let now_ms = crate::time::unix_now_ms();
        let lookup = |network: &str, asset: &str| {
            config
                .assets
                .find(network, asset)
                .map(|a| (a.symbol.clone(), a.decimals))
        };
        match endpoint {
            "payments" => {
                let q = admin_api::payments_query(&params)?;
                // One more than the page, to know whether another follows.
                let mut filter = q.filter.clone();
                filter.page = Some(crate::ops::receipts::Page {
                    after: q
                        .cursor
                        .as_ref()
                        .map(|c| (c.first_time.clone(), c.id.clone())),
                    limit: q.limit + 1,
                });
                let rows = read_journal(config.journal.as_ref(), &filter).await?;
                let (page, next) = admin_api::page(rows, q.limit, q.cursor.as_ref());
                Ok(json!({
                    "payments": page
                        .iter()
                        .map(|r| admin_api::payment_json(r, &config.admin, &lookup, now_ms))
                        .collect::<Vec<_>>(),
                    "next_cursor": next.map(|c| c.encode()),
                }))
            }
            "attention" => {
                let filter = admin_api::attention_query(&params)?;
                let rows = read_journal(config.journal.as_ref(), &filter).await?;
                let listed = admin_api::needing_attention(rows, now_ms);
                let mut counts = serde_json::Map::new();
                for (attention, _) in &listed {
                    let n = counts.entry(attention.as_str()).or_insert(json!(0u64));
                    *n = json!(n.as_u64().unwrap_or(0) + 1);
                }
                Ok(json!({
                    "counts": counts,
                    "payments": listed
                        .iter()
                        .map(|(_, r)| admin_api::payment_json(r, &config.admin, &lookup, now_ms))
                        .collect::<Vec<_>>(),
                }))
            }
            "revenue" => {
                let q = admin_api::revenue_query(&params)?;
                let rows = read_journal(config.journal.as_ref(), &q.filter).await?;
                Ok(admin_api::revenue(&rows, q.bucket, &lookup))
            }
            "health" => {
                if !params.is_empty() {
                    return Err(ApiError::new(
                        400,
                        "invalid_parameter",
                        "`health` takes no parameters",
                    ));
                }
                let (ready, mut body) = self.health.readiness();
                body["ready"] = json!(ready);
                body["in_flight"] = json!(self.health.in_flight());
                body["journal"] = json!(match &config.journal {
                    None => "none",
                    Some(j) if j.url.is_some() => "postgres",
                    Some(_) => "file",
                });
                Ok(body)
            }
            "config" => {
                if !params.is_empty() {
                    return Err(ApiError::new(
                        400,
                        "invalid_parameter",
                        "`config` takes no parameters",
                    ));
                }
                Ok(admin_api::config_json(config))
            }
            _ => Err(ApiError::new(
                404,
                "not_found",
                "admin API endpoints: payments, revenue, attention, health, config",
            )),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        if let Some(endpoint) = path.strip_prefix(admin_api::API_PREFIX) {
            if session.req_header().method != http::Method::GET {
                return api_error(&ApiError::new(
                    405,
                    "method_not_allowed",
                    "the admin API is read-only: GET only",
                ));
            }
            let token = self.state.load().config.admin.token.clone();
            let authorization = session
                .req_header()
                .headers
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes().to_vec());
            let peer = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip());
            if let Err(e) = admin_api::authorize(
                token.as_ref().map(|t| t.expose()),
                authorization.as_deref(),
                peer,
            ) {
                return api_error(&e);
            }
            let query = session.req_header().uri.query().map(str::to_string);
            return match self.api(endpoint, query.as_deref()).await {
                Ok(body) => json_response(200, body),
                Err(e) => api_error(&e),
            };
        }
        match path.as_str() {
            CONSOLE_PATH | "/console/" => console_asset("text/html; charset=utf-8", CONSOLE_HTML),
            "/console/console.js" => console_asset("text/javascript; charset=utf-8", CONSOLE_JS),
            "/console/console.css" => console_asset("text/css; charset=utf-8", CONSOLE_CSS),
            HEALTHZ_PATH => {
                // Liveness means the public port really accepts, not merely that this one does.
                let addr = self.health.public_addr;
                let accepted = tokio::time::timeout(
                    Duration::from_secs(1),
                    tokio::net::TcpStream::connect(addr),
                )
                .await
                .is_ok_and(|c| c.is_ok());
                if accepted {
                    json_response(200, json!({"status": "ok"}))
                } else {
                    json_response(
                        503,
                        json!({"status": "public listener does not accept connections", "listen": addr.to_string()}),
                    )
                }
            }
            READYZ_PATH => {
                let (ready, body) = self.health.readiness();
                json_response(if ready { 200 } else { 503 }, body)
            }
            METRICS_PATH => {
                pingora_prometheus::PrometheusHttpApp
                    .response(session)
                    .await
            }
            _ => json_response(
                404,
                json!({"error": "not_found", "message": "admin endpoints: /healthz, /readyz, /metrics, /admin/api/, /console"}),
            ),
        }
    }
}

/// Asks every configured facilitator for `/supported` each probe interval; readiness follows.
pub struct FacilitatorProbe {
    state: Arc<ArcSwap<GatewayState>>,
    health: Arc<Health>,
}

impl FacilitatorProbe {
    pub fn new(state: Arc<ArcSwap<GatewayState>>, health: Arc<Health>) -> Self {
        Self { state, health }
    }

    pub async fn probe_once(&self) {
        let state = self.state.load_full();
        let names: Vec<&str> = state
            .facilitators
            .iter()
            .map(|(c, _)| c.name.as_str())
            .collect();
        self.health.keep_facilitators(&names);
        for (config, facilitator) in state.facilitators.iter() {
            let name = config.name.as_str();
            let started = Instant::now();
            let result = facilitator.supported().await;
            Metrics::global()
                .facilitator_seconds
                .with_label_values(&[name, "supported"])
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = &result {
                tracing::warn!(facilitator = %name, error = %e, "facilitator probe failed");
            }
            self.health.facilitator_answered(name, result.is_ok());
        }
    }
}

#[async_trait]
impl BackgroundService for FacilitatorProbe {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.probe_once().await;
            let pause = self.health.probe_interval();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
