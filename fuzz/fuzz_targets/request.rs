//! The request normaliser and route matcher. Input: a method line, a request-target line, then
//! `name: value` header lines.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use x402_gateway::pricing::{canonical_path, headers_to_drop, normalise, RequestRules};

fuzz_target!(|data: &[u8]| {
    let config = common::config();
    let mut lines = data.split(|&b| b == b'\n');
    let method = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let target = lines.next().unwrap_or_default();
    let headers: Vec<(String, &[u8])> = lines
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name.to_ascii_lowercase(), &line[colon + 1..]))
        })
        .collect();
    let pairs = || headers.iter().map(|(n, v)| (n.as_str(), *v));
    for rules in [
        config.server.requests,
        RequestRules {
            drop_underscore_headers: true,
            ..RequestRules::default()
        },
    ] {
        let decided = normalise(&method, target, pairs(), &config.routes, &rules);
        assert_eq!(
            decided.as_ref().ok().map(|p| p.drop_headers.clone()),
            decided
                .as_ref()
                .ok()
                .map(|_| headers_to_drop(pairs(), &rules)),
            "both phases drop the same headers"
        );
        if let Ok(priced) = decided {
            assert!(priced.path.starts_with('/'), "{:?}", priced.path);
            // The canonical form is a fixed point: matching it again gives the same route.
            let again = canonical_path(&priced.path);
            assert_eq!(again, priced.path.as_str(), "canonical form is stable");
            let _ = config.routes.find(&priced.method, &priced.path);
        }
    }
});
