//! The MCP message reader and the SSE splitter. Input: a JSON-RPC body; the same bytes are also
//! fed to the splitter in two chunks split at the first byte's value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x402_gateway::pricing::mcp::{McpRequest, SseSplitter, META_PAYMENT};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = McpRequest::parse(data, 64 * 1024) {
        // Whatever the message, the payment never goes on to the MCP server.
        let forwarded = request.forwarded_body();
        let value: serde_json::Value =
            serde_json::from_slice(&forwarded).expect("the forwarded body is JSON");
        let meta = value.get("params").and_then(|p| p.get("_meta"));
        assert!(
            meta.and_then(|m| m.get(META_PAYMENT)).is_none(),
            "payment forwarded: {value}"
        );
    }
    // Events come out whole and in order, however the bytes arrive.
    let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut splitter = SseSplitter::default();
    let mut events = Vec::new();
    for chunk in [&data[..cut], &data[cut..]] {
        splitter.push(chunk);
        while let Some(event) = splitter.next_event() {
            events.extend_from_slice(&event.raw);
        }
    }
    assert_eq!(events.len() + splitter.pending_len(), data.len());
    assert_eq!(&events[..], &data[..events.len()]);
});
