//! Everything one configuration version gives a request: the validated configuration, the
//! facilitator clients, the resolved upstream, the prepared pages and the metric handles. Shared
//! by the proxy and by operations (admin, reload) without either depending on the other.

mod pages;

pub use pages::{escape, prefers_html, Pages, DISCOVERY_PATH};

use crate::config::GatewayConfig;
use crate::facilitator::{FacilitatorError, Facilitators};
use crate::metrics::{FacilitatorMetrics, RouteMetrics};
use crate::pricing::RouteKind;
use std::net::{SocketAddr, ToSocketAddrs};

/// Everything a request needs that belongs to one configuration version.
pub struct GatewayState {
    pub config: GatewayConfig,
    /// The facilitators, chosen per payment by its network.
    pub facilitators: Facilitators,
    /// The upstream address, resolved once at start-up.
    pub upstream_addr: SocketAddr,
    /// Paywall pages and the discovery document.
    pub pages: Pages,
    /// Metric handles by route index (file order).
    pub route_metrics: Vec<RouteMetrics>,
    /// Metric handles of each priced item of an MCP route, by route index then item position.
    pub item_metrics: Vec<Vec<RouteMetrics>>,
    /// Requests no route matches.
    pub unmatched_metrics: RouteMetrics,
    /// Metric handles by facilitator, in configuration order.
    pub facilitator_metrics: Vec<FacilitatorMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot resolve upstream host `{host}`: {reason}")]
    Resolve { host: String, reason: String },
    #[error("cannot set up the facilitator client: {0}")]
    Facilitator(#[from] FacilitatorError),
    #[error("cannot listen with TLS on {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Journal(#[from] crate::ports::JournalError),
    #[error("cannot start: {0}")]
    Runtime(String),
    #[error("{0}")]
    SharedStore(#[from] crate::store::StoreError),
}

pub const UNMATCHED_LABEL: &str = "(unmatched)";

impl GatewayState {
    /// The metric handles of a request's route, or of its MCP item when it names a priced one.
    pub fn metrics_for(&self, route: Option<usize>, item: Option<usize>) -> Option<&RouteMetrics> {
        match (route, item) {
            (Some(r), Some(i)) => self.item_metrics.get(r).and_then(|items| items.get(i)),
            (Some(r), None) => self.route_metrics.get(r),
            (None, _) => Some(&self.unmatched_metrics),
        }
    }

    /// The metric handles of the facilitator named `name` (the first one if none has that name).
    pub fn facilitator_metrics_named(&self, name: &str) -> &FacilitatorMetrics {
        self.facilitator_metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or(&self.facilitator_metrics[0])
    }

    /// The metric handles of the facilitator serving `network`.
    pub fn facilitator_metrics_for(&self, network: &str) -> &FacilitatorMetrics {
        let name = self.facilitators.for_network(network);
        self.facilitator_metrics_named(name.as_ref().map_or("", |f| f.name()))
    }
}

impl GatewayState {
    pub fn new(config: GatewayConfig) -> Result<Self, StartError> {
        Self::with_facilitators(config, None)
    }

    /// Like [`GatewayState::new`], reusing `facilitators` when given (a reload that did not
    /// change them keeps their connection pools and the test-mode ledger).
    pub fn with_facilitators(
        config: GatewayConfig,
        facilitators: Option<Facilitators>,
    ) -> Result<Self, StartError> {
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
        let facilitators = match facilitators {
            Some(f) => f,
            None => Facilitators::from_config(&config.facilitators)?,
        };
        let routes = config.routes.in_file_order();
        let mut route_metrics: Vec<RouteMetrics> = Vec::with_capacity(routes.len());
        let mut item_metrics: Vec<Vec<RouteMetrics>> = Vec::with_capacity(routes.len());
        let options_of = |p: &crate::pricing::PricedRoute| -> Vec<(String, String)> {
            p.options
                .iter()
                .map(|o| (o.requirements.network.clone(), o.asset_symbol.clone()))
                .collect()
        };
        let metrics = |label: &str, options: Vec<(String, String)>| {
            let options: Vec<(&str, &str)> = options
                .iter()
                .map(|(n, a)| (n.as_str(), a.as_str()))
                .collect();
            RouteMetrics::new(label, &options)
        };
        for (position, route) in routes.iter().enumerate() {
            debug_assert_eq!(position, route.index);
            let (own, items) = match &route.kind {
                RouteKind::Free => (Vec::new(), Vec::new()),
                RouteKind::Priced(p) => (options_of(p), Vec::new()),
                RouteKind::Mcp(m) => (
                    Vec::new(),
                    m.items
                        .iter()
                        .map(|i| {
                            let label = format!("{} {}", route.label(), i.label());
                            metrics(&label, options_of(&i.priced))
                        })
                        .collect(),
                ),
            };
            route_metrics.push(metrics(route.label(), own));
            item_metrics.push(items);
        }
        let mut facilitator_metrics: Vec<FacilitatorMetrics> = facilitators
            .iter()
            .map(|(config, _)| FacilitatorMetrics::new(&config.name))
            .collect();
        if facilitator_metrics.is_empty() {
            facilitator_metrics.push(FacilitatorMetrics::new("none"));
        }
        Ok(Self {
            pages: Pages::new(&config),
            route_metrics,
            item_metrics,
            unmatched_metrics: RouteMetrics::new(UNMATCHED_LABEL, &[]),
            facilitator_metrics,
            config,
            facilitators,
            upstream_addr,
        })
    }
}
