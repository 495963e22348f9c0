//! The admin listener: `/healthz` (liveness), `/readyz` (readiness) and `/metrics` (Prometheus).
//! It listens on its own address, never the public one, so probes and scrapes neither pay nor
//! count as API traffic.

use crate::metrics::Metrics;
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
}

impl AdminApp {
    pub fn new(health: Arc<Health>) -> Self {
        Self { health }
    }
}

fn json_response(status: u16, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
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
                json!({"error": "not_found", "message": "admin endpoints: /healthz, /readyz, /metrics"}),
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
