//! Pages computed once per configuration version: the browser paywall of each priced route and
//! the `/.well-known/x402` discovery document.

use crate::config::GatewayConfig;
use crate::pricing::{format_units, PricedRoute, Route, RouteKind};
use bytes::Bytes;
use serde_json::json;

pub const DISCOVERY_PATH: &str = "/.well-known/x402";

/// The paywall of one route, split around the per-request resource URL.
#[derive(Debug, Clone)]
pub struct Paywall {
    before_url: String,
    after_url: String,
}

impl Paywall {
    pub fn render(&self, resource_url: &str) -> Bytes {
        let url = escape(resource_url);
        let mut page =
            String::with_capacity(self.before_url.len() + url.len() + self.after_url.len());
        page.push_str(&self.before_url);
        page.push_str(&url);
        page.push_str(&self.after_url);
        Bytes::from(page)
    }
}

/// Whether the client would rather read HTML than JSON: `text/html` must be acceptable and
/// strictly preferred over `application/json` (ties, as with `*/*`, stay JSON for programs).
pub fn prefers_html(accept: &str) -> bool {
    let quality = |wanted: &str| -> f32 {
        let (kind, _) = wanted.split_once('/').unwrap_or((wanted, ""));
        let mut best: Option<(u8, f32)> = None;
        for item in accept.split(',') {
            let mut params = item.split(';');
            let range = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let specificity = if range == wanted {
                3
            } else if range.strip_suffix("/*") == Some(kind) {
                2
            } else if range == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let html = quality("text/html");
    html > 0.0 && html > quality("application/json")
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn network_name(network: &str) -> &str {
    match network {
        "eip155:8453" => "Base",
        "eip155:84532" => "Base Sepolia (testnet)",
        "eip155:196" => "X Layer",
        "eip155:1952" => "X Layer testnet",
        other => other,
    }
}

const STYLE: &str =
    "body{font-family:system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}\
main{max-width:46rem;margin:3rem auto;padding:2rem;background:#fff;border-radius:12px;\
box-shadow:0 1px 4px rgba(0,0,0,.08)}h1{margin-top:0}table{border-collapse:collapse;width:100%;\
font-size:.9rem}th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid #e3e6ea;\
vertical-align:top}code{word-break:break-all}.price{font-size:1.6rem;font-weight:600}";

fn paywall(route: &Route, priced: &PricedRoute) -> Paywall {
    let (method, _) = route.source.split_once(' ').unwrap_or(("*", ""));
    let first = priced.options.first();
    let headline = first.map_or(String::new(), |o| {
        format!(
            "${} <small>in {} on {}</small>",
            format_units(o.amount, o.decimals),
            escape(&o.asset_symbol),
            escape(network_name(&o.requirements.network))
        )
    });
    let mut rows = String::new();
    for o in &priced.options {
        let r = &o.requirements;
        rows.push_str(&format!(
            "<tr><td>${dollars}</td><td>{atomic} <small>({decimals} decimals)</small></td>\
             <td>{network}<br><small><code>{caip}</code></small></td>\
             <td>{symbol}<br><small><code>{asset}</code></small></td><td><code>{pay_to}</code></td></tr>",
            dollars = format_units(o.amount, o.decimals),
            atomic = escape(&r.amount),
            decimals = o.decimals,
            network = escape(network_name(&r.network)),
            caip = escape(&r.network),
            symbol = escape(&o.asset_symbol),
            asset = escape(&r.asset),
            pay_to = escape(&r.pay_to),
        ));
    }
    let description = if priced.description.is_empty() {
        String::new()
    } else {
        format!("<p>{}</p>", escape(&priced.description))
    };
    let before_url = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>402 Payment Required</title><style>{STYLE}</style></head><body><main>\
         <h1>Payment required</h1>{description}<p class=\"price\">{headline}</p>\
         <p>Resource: <code>{method} ",
        method = escape(method),
    );
    let after_url = format!(
        "</code></p><h2>Accepted payments</h2><table><tr><th>Price</th><th>Atomic units</th>\
         <th>Network</th><th>Asset</th><th>Pay to</th></tr>{rows}</table>\
         <h2>What is x402?</h2><p><a href=\"https://x402.org\">x402</a> is an open protocol for \
         paying for HTTP requests with stablecoins. Instead of an account or an API key, a client \
         pays for each request: the server answers <code>402 Payment Required</code> with the \
         price, and the client retries with a signed payment.</p><h2>How to pay</h2><ol>\
         <li>Use an x402 client: an agent or a library such as the official x402 SDKs.</li>\
         <li>It reads the <code>PAYMENT-REQUIRED</code> header of this response (base64 JSON \
         listing the options above) and signs a transfer authorization (EIP-3009) for one of them.\
         </li><li>It repeats the request with the <code>PAYMENT-SIGNATURE</code> header. The \
         payment is verified and settled, and the answer carries a <code>PAYMENT-RESPONSE</code> \
         header with the transaction.</li></ol><p><small>Nothing is charged if the request \
         fails.</small></p></main></body></html>"
    );
    Paywall {
        before_url,
        after_url,
    }
}

/// What each configuration version precomputes for the pages above.
#[derive(Debug, Default)]
pub struct Pages {
    /// By route index (file order); `None` for free routes.
    pub paywalls: Vec<Option<Paywall>>,
    /// The discovery document, when enabled.
    pub discovery: Option<Bytes>,
}

/// The discovery document's human-readable prices of a route's options.
fn prices(priced: &PricedRoute) -> Vec<serde_json::Value> {
    priced
        .options
        .iter()
        .map(|o| {
            json!({
                "network": o.requirements.network,
                "asset": o.asset_symbol,
                "amount": o.requirements.amount,
                "decimals": o.decimals,
                "price": format_units(o.amount, o.decimals),
            })
        })
        .collect()
}

/// Adds what a route listed in the Bazaar declares (`bazaar`: catalog fields, input and output).
fn with_bazaar(entry: &mut serde_json::Value, priced: &PricedRoute) {
    if let (Some(discovery), Some(obj)) = (&priced.discovery, entry.as_object_mut()) {
        obj.insert("bazaar".into(), discovery.summary());
    }
}

impl Pages {
    pub fn new(config: &GatewayConfig) -> Self {
        let routes = config.routes.in_file_order();
        let mut paywalls = vec![None; routes.iter().map(|r| r.index + 1).max().unwrap_or(0)];
        let mut listed = Vec::new();
        for route in &routes {
            if let RouteKind::Mcp(mcp) = &route.kind {
                let (_, path) = route.source.split_once(' ').unwrap_or(("*", &route.source));
                for item in &mcp.items {
                    let priced = &item.priced;
                    let mut entry = json!({
                        "route": route.source,
                        "method": "POST",
                        "path": path.trim(),
                        "mcp": {"kind": item.kind.as_str(), "name": item.name},
                        "resource": item.resource_url(),
                        "description": priced.description,
                        "mimeType": priced.mime_type,
                        "settle": priced.settle.as_str(),
                        "accepts": priced.options.iter().map(|o| &o.requirements).collect::<Vec<_>>(),
                        "prices": prices(priced),
                    });
                    with_bazaar(&mut entry, priced);
                    listed.push(entry);
                }
                continue;
            }
            let RouteKind::Priced(priced) = &route.kind else {
                continue;
            };
            paywalls[route.index] = Some(paywall(route, priced));
            let (method, path) = route.source.split_once(' ').unwrap_or(("*", &route.source));
            let mut resource = json!({
                "route": route.source,
                "method": method,
                "path": path.trim(),
                "description": priced.description,
                "mimeType": priced.mime_type,
                "settle": priced.settle.as_str(),
                "accepts": priced.options.iter().map(|o| &o.requirements).collect::<Vec<_>>(),
                "prices": prices(priced),
            });
            if let (Some(metering), Some(option), Some(obj)) = (
                &priced.metering,
                priced.options.first(),
                resource.as_object_mut(),
            ) {
                // The option's amount is the maximum; this says what is charged within it.
                obj.insert("metering".into(), metering.describe(option.decimals));
            }
            if let (Some(window), Some(obj)) = (priced.access, resource.as_object_mut()) {
                obj.insert("accessSeconds".into(), window.as_secs().into());
            }
            if let (false, Some(obj)) = (priced.price_rules.is_empty(), resource.as_object_mut()) {
                let rules: Vec<_> = priced
                    .price_rules
                    .iter()
                    .map(|rule| {
                        json!({
                            "when": rule.condition.to_json(),
                            "accepts": rule.priced.options.iter().map(|o| &o.requirements).collect::<Vec<_>>(),
                            "prices": prices(&rule.priced),
                        })
                    })
                    .collect();
                obj.insert("priceRules".into(), rules.into());
            }
            let literal = !path.contains(['*', ':']);
            if let (Some(base), true, Some(obj)) =
                (&config.server.public_url, literal, resource.as_object_mut())
            {
                obj.insert("url".into(), format!("{base}{}", path.trim()).into());
            }
            with_bazaar(&mut resource, priced);
            listed.push(resource);
        }
        let discovery = config
            .discovery
            .then(|| Bytes::from(json!({"x402Version": 2, "resources": listed}).to_string()));
        Self {
            paywalls,
            discovery,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovered(routes: &str) -> serde_json::Value {
        let text = format!(
            "[server]\npublic_url = \"https://api.example.com\"\n[upstream]\nurl = \"http://127.0.0.1:9\"\n[facilitator]\nkind = \"local\"\n[defaults]\npay_to = \"0x70997970c51812dc3a010c7d01b50e0d17dc79c8\"\nnetwork = \"eip155:84532\"\n{routes}"
        );
        let config = GatewayConfig::parse(&text, std::path::Path::new("g.toml"), &|_| None)
            .expect("a valid configuration");
        let document = Pages::new(&config).discovery.expect("discovery is on");
        serde_json::from_slice(&document).expect("JSON")
    }

    #[test]
    fn the_discovery_document_says_how_metered_routes_charge_and_how_long_access_lasts() {
        let doc = discovered(
            "[[routes]]\nmatch = \"POST /chat\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_json = \"usage.total_tokens\"\nunit_price = \"$0.0001\"\n\
             [[routes]]\nmatch = \"GET /units\"\nscheme = \"upto\"\nprice = \"$1\"\nusage_header = \"X-Units\"\nunit_amount = \"7\"\nusage_fallback = \"nothing\"\n\
             [[routes]]\nmatch = \"GET /cost\"\nscheme = \"upto\"\nprice = \"$1\"\namount_header = \"X-Cost\"\n\
             [[routes]]\nmatch = \"GET /report\"\nprice = \"$0.05\"\naccess = \"24h\"\n",
        );
        let resources = doc["resources"].as_array().expect("resources");
        assert_eq!(
            resources[0]["metering"],
            serde_json::json!({"source": "usage_json", "path": "usage.total_tokens", "unitAmount": "100", "unitPrice": "0.0001", "fallback": "maximum"})
        );
        assert_eq!(
            resources[0]["accepts"][0]["amount"], "1000000",
            "the maximum"
        );
        assert_eq!(
            resources[1]["metering"],
            serde_json::json!({"source": "usage_header", "header": "x-units", "unitAmount": "7", "unitPrice": "0.000007", "fallback": "nothing"})
        );
        assert_eq!(
            resources[2]["metering"],
            serde_json::json!({"source": "amount_header", "header": "x-cost", "fallback": "maximum"})
        );
        assert_eq!(resources[3]["accessSeconds"], 86_400);
        assert!(resources[3].get("metering").is_none(), "a fixed price");
        assert!(resources[0].get("accessSeconds").is_none());
    }

    #[test]
    fn browsers_prefer_html_and_programs_do_not() {
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert!(prefers_html(firefox));
        assert!(prefers_html("text/html"));
        assert!(!prefers_html("*/*"));
        assert!(!prefers_html("application/json"));
        assert!(!prefers_html("application/json, text/html"));
        assert!(!prefers_html("text/html;q=0.5, application/json"));
        assert!(prefers_html("text/*, application/json;q=0.5"));
        assert!(!prefers_html("text/html;q=0"));
        assert!(!prefers_html(""));
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
