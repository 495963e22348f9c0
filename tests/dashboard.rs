//! The Grafana dashboard shipped in `examples/grafana/`: a valid dashboard whose every query names
//! a metric the gateway registers (read from `src/metrics.rs`, where each is declared once), so a
//! renamed metric cannot leave a panel silently empty.

use std::collections::BTreeSet;

const DASHBOARD: &str = include_str!("../examples/grafana/x402-gateway.json");
const METRICS_SOURCE: &str = include_str!("../src/metrics.rs");

/// Every `x402_…` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("x402_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The metric a query series belongs to: a histogram's `_bucket`, `_sum` and `_count` series are
/// its own.
fn family(series: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series)
}

#[test]
fn every_panel_queries_metrics_the_gateway_registers() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let registered: BTreeSet<String> = metric_names(METRICS_SOURCE)
        .into_iter()
        .filter(|n| METRICS_SOURCE.contains(&format!("\"{n}\"")))
        .collect();
    assert!(
        registered.len() >= 20,
        "the metrics source declares its names: {registered:?}"
    );
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty());
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("id")), "unique ids");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{}", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL query");
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{expr} queries no gateway metric");
            for name in names {
                let family = family(&name).to_string();
                assert!(
                    registered.contains(&family),
                    "panel `{}` queries `{name}`, which the gateway does not register",
                    panel["title"]
                );
                queried.insert(family);
            }
        }
    }
    // The operator's questions: what it earned, what needs attention, whether it is healthy.
    for needed in [
        "x402_requests_total",
        "x402_revenue_atomic_total",
        "x402_payments_failed_total",
        "x402_facilitator_up",
        "x402_journal_pending_settlements",
        "x402_batch_unclaimed_atomic",
    ] {
        assert!(queried.contains(needed), "no panel shows {needed}");
    }
}
