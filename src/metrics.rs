//! Prometheus metrics, registered in the registry `pingora-prometheus` serves (through its
//! re-exported `prometheus`, so that the versions cannot drift apart and hide metrics).
//!
//! Label children that every request touches are resolved once per configuration version
//! ([`RouteMetrics`]), so the hot path increments counters without hashing label values.

use pingora_prometheus::prometheus::{
    self, exponential_buckets, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use std::sync::OnceLock;

use crate::payment::Outcome;

/// Every metric of the gateway.
pub struct Metrics {
    pub requests: IntCounterVec,
    pub payment_required: IntCounterVec,
    pub verified: IntCounterVec,
    pub settled: IntCounterVec,
    pub failed: IntCounterVec,
    pub revenue: IntCounterVec,
    pub replays_refused: IntCounter,
    pub facilitator_seconds: HistogramVec,
    pub upstream_seconds: Histogram,
    pub config_reloads: IntCounterVec,
    pub config_loaded_timestamp: IntGauge,
    pub facilitator_up: IntGaugeVec,
    pub journal_pending: IntGauge,
    pub journal_errors: IntCounter,
    pub reconciliations: IntCounterVec,
    /// Settled revenue recorded in the shared journal database, across every replica.
    pub ledger_revenue: GaugeVec,
    pub in_flight: IntGauge,
    pub shared_store_up: IntGauge,
    pub shared_store_unavailable: IntCounterVec,
    /// `batch-settlement` vouchers claimed on chain or refused, by result.
    pub batch_claims: IntCounterVec,
    /// Charges kept on `batch-settlement` channels and not yet claimed on chain (atomic units,
    /// summed across assets): what a lost channel store would forfeit.
    pub batch_unclaimed: IntGauge,
    pub batch_channels: IntGauge,
    /// Settled answers the upstream broke off before their end: refund candidates.
    pub answers_cut: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    // A second registration (tests building several servers) keeps the first collector.
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric definition");
    let _ = prometheus::register(Box::new(g.clone()));
    g
}

impl Metrics {
    /// The process-wide metrics, registered on first use.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(Metrics::register)
    }

    fn register() -> Self {
        let latency = exponential_buckets(0.005, 2.0, 12).unwrap_or_default();
        let facilitator_seconds = HistogramVec::new(
            HistogramOpts::new(
                "x402_facilitator_request_duration_seconds",
                "Facilitator call latency by facilitator and operation (verify, settle, supported)",
            )
            .buckets(latency.clone()),
            &["facilitator", "operation"],
        )
        .expect("valid metric definition");
        let _ = prometheus::register(Box::new(facilitator_seconds.clone()));
        let upstream_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "x402_upstream_response_duration_seconds",
                "Time from sending a request upstream to its response header",
            )
            .buckets(latency),
        )
        .expect("valid metric definition");
        let _ = prometheus::register(Box::new(upstream_seconds.clone()));
        let facilitator_up = IntGaugeVec::new(
            Opts::new(
                "x402_facilitator_up",
                "1 when the last probe of the facilitator succeeded",
            ),
            &["facilitator"],
        )
        .expect("valid metric definition");
        let _ = prometheus::register(Box::new(facilitator_up.clone()));
        Self {
            requests: counter(
                "x402_requests_total",
                "Requests by route and outcome",
                &["route", "outcome"],
            ),
            payment_required: counter(
                "x402_payment_required_total",
                "402 responses issued, by route",
                &["route"],
            ),
            verified: counter(
                "x402_payments_verified_total",
                "Payments the facilitator verified",
                &["facilitator"],
            ),
            settled: counter(
                "x402_payments_settled_total",
                "Payments settled",
                &["facilitator"],
            ),
            failed: counter(
                "x402_payments_failed_total",
                "Payments refused or failed, by reason",
                &["facilitator", "reason"],
            ),
            revenue: counter(
                "x402_revenue_atomic_total",
                "Settled amounts in the asset's atomic units",
                &["route", "network", "asset"],
            ),
            replays_refused: {
                let c = IntCounter::new(
                    "x402_replays_refused_total",
                    "Payments refused because their authorization was in use or already used",
                )
                .expect("valid metric definition");
                let _ = prometheus::register(Box::new(c.clone()));
                c
            },
            facilitator_seconds,
            upstream_seconds,
            config_reloads: counter(
                "x402_config_reloads_total",
                "Configuration reloads by result (success, failure)",
                &["result"],
            ),
            config_loaded_timestamp: gauge(
                "x402_config_loaded_timestamp_seconds",
                "When the configuration now serving was loaded (unix seconds)",
            ),
            facilitator_up,
            batch_claims: counter(
                "x402_batch_claims_total",
                "batch-settlement vouchers claimed on chain (claimed) or refused by the escrow (failed)",
                &["result"],
            ),
            batch_unclaimed: gauge(
                "x402_batch_unclaimed_atomic",
                "Charges kept on batch-settlement channels and not yet claimed on chain, in atomic units",
            ),
            batch_channels: gauge(
                "x402_batch_channels",
                "batch-settlement channels the gateway keeps state for",
            ),
            journal_pending: gauge(
                "x402_journal_pending_settlements",
                "Settlements recorded as pending and not reconciled yet",
            ),
            journal_errors: {
                let c = IntCounter::new(
                    "x402_journal_write_errors_total",
                    "Journal writes that failed",
                )
                .expect("valid metric definition");
                let _ = prometheus::register(Box::new(c.clone()));
                c
            },
            reconciliations: counter(
                "x402_reconciliations_total",
                "Pending settlement checks by result (settled, failed, pending, unknown, error)",
                &["result"],
            ),
            ledger_revenue: {
                let g = GaugeVec::new(
                    Opts::new(
                        "x402_ledger_revenue_atomic",
                        "Settled amounts in the journal database (all replicas), in atomic units",
                    ),
                    &["route", "network", "asset"],
                )
                .expect("valid metric definition");
                let _ = prometheus::register(Box::new(g.clone()));
                g
            },
            in_flight: gauge("x402_requests_in_flight", "Requests being served"),
            shared_store_up: gauge(
                "x402_shared_store_up",
                "Whether the shared store (Redis) answered its last operation in time",
            ),
            shared_store_unavailable: counter(
                "x402_shared_store_unavailable_total",
                "Shared store (Redis) operations that failed or timed out, by operation",
                &["operation"],
            ),
            answers_cut: counter(
                "x402_settled_answers_cut_total",
                "Settled answers the upstream broke off before their end (refund candidates)",
                &["route"],
            ),
        }
    }

    /// A failure reason as a label: facilitator reasons are free text, so keep it short and tame.
    pub fn reason_label(reason: &str) -> String {
        reason
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect()
    }
}

/// Counters of one route, resolved once per configuration version.
pub struct RouteMetrics {
    outcomes: [IntCounter; Outcome::ALL.len()],
    pub payment_required: IntCounter,
    /// Revenue counter per payment option, in the route's option order.
    pub revenue: Vec<IntCounter>,
    pub answers_cut: IntCounter,
}

impl RouteMetrics {
    /// `options` are (network, asset) of each payment option.
    pub fn new(route: &str, options: &[(&str, &str)]) -> Self {
        let m = Metrics::global();
        Self {
            outcomes: Outcome::ALL.map(|o| m.requests.with_label_values(&[route, o.as_str()])),
            payment_required: m.payment_required.with_label_values(&[route]),
            answers_cut: m.answers_cut.with_label_values(&[route]),
            revenue: options
                .iter()
                .map(|(network, asset)| m.revenue.with_label_values(&[route, network, asset]))
                .collect(),
        }
    }

    pub fn outcome(&self, outcome: Outcome) -> &IntCounter {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        &self.outcomes[i]
    }
}

/// Counters of one facilitator, resolved once per configuration version.
pub struct FacilitatorMetrics {
    pub name: String,
    pub verified: IntCounter,
    pub settled: IntCounter,
    pub verify_seconds: Histogram,
    pub settle_seconds: Histogram,
}

impl FacilitatorMetrics {
    pub fn new(name: &str) -> Self {
        let m = Metrics::global();
        Self {
            name: name.to_string(),
            verified: m.verified.with_label_values(&[name]),
            settled: m.settled.with_label_values(&[name]),
            verify_seconds: m.facilitator_seconds.with_label_values(&[name, "verify"]),
            settle_seconds: m.facilitator_seconds.with_label_values(&[name, "settle"]),
        }
    }

    /// Failures are rare and their reasons open-ended, so they are looked up when they happen.
    pub fn failed(&self, reason: &str) {
        Metrics::global()
            .failed
            .with_label_values(&[&self.name, &Metrics::reason_label(reason)])
            .inc();
    }
}
