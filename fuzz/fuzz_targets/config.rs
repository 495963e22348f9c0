//! `gateway.toml` loading: TOML parsing, `${VAR}` expansion and every validation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use x402_gateway::config::GatewayConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    let _ = GatewayConfig::parse(text, Path::new("/nonexistent/gateway.toml"), &env);
});
