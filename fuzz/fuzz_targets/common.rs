//! What the targets share: a real configuration with free and priced routes on two networks.
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;
use x402_gateway::config::GatewayConfig;

const CONFIG: &str = r#"unmatched = "proxy"
[upstream]
url = "http://127.0.0.1:8080"
[facilitator]
kind = "local"
[defaults]
network = "eip155:84532"
pay_to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
[[routes]]
match = "GET /paid"
price = "$0.01"
[[routes]]
match = "* /paid/**"
price = "$0.01"
[[routes]]
match = "DELETE /items/:id"
price = "$0.01"
[[routes]]
match = "GET /Käse/*/ſtraße"
price = "$0.01"
[[routes]]
match = "GET /free/**"
free = true
[[routes]]
match = "GET /multi"
accepts = [ { price = "$0.02" }, { price = "$0.02", network = "eip155:196", asset = "USDT0" } ]
"#;

pub fn config() -> &'static GatewayConfig {
    static CONFIG_ONCE: OnceLock<GatewayConfig> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| {
        GatewayConfig::parse(CONFIG, Path::new("gateway.toml"), &|_| None)
            .expect("the fuzz configuration is valid")
    })
}
